package main

import (
	"bytes"
	"context"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

func runCLI(ctx context.Context, args ...string) (string, error) {
	cmd := newRootCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(ctx)
	return out.String(), err
}

func TestControlPlaneFlagMistakesAreReported(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"missing config dir", []string{"controlplane"}, `at least one of the flags in the group [config-dir kubernetes kubeconfig] is required`},
		{"bad log level", []string{"controlplane", "--config-dir", t.TempDir(), "--log-level", "loud"}, `--log-level "loud"`},
		{"stray argument", []string{"controlplane", "--config-dir", t.TempDir(), "extra"}, "unknown command"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := runCLI(context.Background(), tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestControlPlaneStopsCleanlyWhenCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var out string
	go func() {
		var err error
		out, err = runCLI(ctx, "controlplane", "--config-dir", t.TempDir(), "--xds-address", "127.0.0.1:0", "--debug-address", "127.0.0.1:0", "--ca-address", "127.0.0.1:0", "--ca-dir", t.TempDir(), "--log-level", "debug")
		done <- err
	}()
	time.Sleep(200 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("controlplane returned %v after cancel", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("controlplane did not stop after cancel")
	}
	if !strings.Contains(out, "serving xDS") || !strings.Contains(out, "control plane stopped") {
		t.Fatalf("log output lacks start/stop lines:\n%s", out)
	}
}

func TestControlPlaneServesOnXDSPort(t *testing.T) {
	port := freePort(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := runCLI(ctx, "controlplane", "--config-dir", t.TempDir(), "--xds-port", strconv.Itoa(port), "--debug-address", "", "--ca-address", "")
		done <- err
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("controlplane: %v", err)
		}
	}()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing serves on --xds-port %d: %v", port, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
