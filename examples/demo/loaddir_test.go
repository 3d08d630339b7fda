package demo

import (
	"path/filepath"
	"testing"

	"github.com/trellis-mesh/trellis/internal/config"
)

// The demo must load cleanly with Trellis's own Istio validation: a
// warning here would greet every user of `trellis up`.
func TestWrittenConfigLoadsWithoutErrorsOrWarnings(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "demo")
	if err := WriteConfig(dir); err != nil {
		t.Fatal(err)
	}
	cfg, warns, err := config.LoadDir(dir)
	if err != nil {
		t.Fatalf("LoadDir: %v", err)
	}
	for _, w := range warns {
		t.Errorf("warning: %s", w)
	}
	got := map[string]int{
		"ServiceEntry":    len(cfg.ServiceEntries),
		"WorkloadEntry":   len(cfg.WorkloadEntries),
		"Sidecar":         len(cfg.Sidecars),
		"Gateway":         len(cfg.Gateways),
		"VirtualService":  len(cfg.VirtualServices),
		"DestinationRule": len(cfg.DestinationRules),
	}
	want := map[string]int{"ServiceEntry": 3, "WorkloadEntry": 6, "Sidecar": 5, "Gateway": 1, "VirtualService": 2, "DestinationRule": 3}
	for k, n := range want {
		if got[k] != n {
			t.Errorf("loaded %d %ss, want %d", got[k], k, n)
		}
	}
	if cfg.Mesh.GetDefaultConfig().GetDiscoveryAddress() != "127.0.0.1:15010" {
		t.Errorf("mesh.yaml not applied: %v", cfg.Mesh)
	}
}
