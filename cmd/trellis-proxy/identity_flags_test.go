package main

import (
	"os"
	"path/filepath"
	"testing"
)

// The CA flags go together, and the token file is re-read on every request (tokens rotate).
func TestCAFlagsBuildTheAgentAndRereadTheTokenFile(t *testing.T) {
	if cfg, err := identityConfig("", "", ""); cfg != nil || err != nil {
		t.Fatalf("no flags: %v, %v", cfg, err)
	}
	if _, err := identityConfig("", "root.pem", ""); err == nil {
		t.Error("--ca-root-cert without --ca-address accepted")
	}
	if _, err := identityConfig("127.0.0.1:15012", "", ""); err == nil {
		t.Error("--ca-address without --ca-root-cert accepted")
	}
	dir := t.TempDir()
	root, tok := filepath.Join(dir, "root.pem"), filepath.Join(dir, "token")
	if err := os.WriteFile(root, []byte("PEM"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tok, []byte("one\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := identityConfig("127.0.0.1:15012", root, tok)
	if err != nil || cfg.CAAddress != "127.0.0.1:15012" || string(cfg.RootCert) != "PEM" {
		t.Fatalf("%+v, %v", cfg, err)
	}
	if got, _ := cfg.Token(); got != "one" {
		t.Fatalf("token %q", got)
	}
	if err := os.WriteFile(tok, []byte("two"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, _ := cfg.Token(); got != "two" {
		t.Fatalf("rotated token %q", got)
	}
}
