package inject

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/trellis-mesh/trellis/internal/config"
	"github.com/trellis-mesh/trellis/internal/proxyconfig"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// testParams are the template inputs of every golden case.
func testParams(native bool) Params {
	return Params{
		ProxyImage:     "ghcr.io/trellis-mesh/trellis-proxy:test",
		XDSAddress:     "trellis.trellis-system.svc:15010",
		CAAddress:      "trellis.trellis-system.svc:15012",
		TrustDomain:    "cluster.local",
		NativeSidecars: native,
	}
}

// TestInjectGolden injects testdata/<case>.in.yaml the way `trellis inject` does (ProxyConfigs
// from the same file) and compares with <case>.golden.yaml; -update rewrites them.
func TestInjectGolden(t *testing.T) {
	for _, tc := range []struct {
		name   string
		native bool
	}{
		{"deployment", true},
		{"pod", true},
		{"job", true},
		{"opt-out", true},
		{"hierarchy", true},
		{"hold", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in, err := os.ReadFile(filepath.Join("testdata", tc.name+".in.yaml"))
			if err != nil {
				t.Fatal(err)
			}
			pcs := proxyConfigsOf(t, tc.name, in)
			got, warnings, err := InjectYAML(in, FileOptions{Params: testParams(tc.native), ProxyConfigs: pcs})
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range warnings {
				t.Log("warning:", w)
			}
			golden := filepath.Join("testdata", tc.name+".golden.yaml")
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("output differs from %s (run with -update and check the diff):\n%s", golden, got)
			}
			// Injecting the output again changes nothing.
			again, _, err := InjectYAML(got, FileOptions{Params: testParams(tc.native), ProxyConfigs: pcs})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(again, got) {
				t.Errorf("second injection changed the output:\n%s", again)
			}
		})
	}
}

// proxyConfigsOf reads the ProxyConfig documents of a case, as a config dir's loader would.
func proxyConfigsOf(t *testing.T, name string, in []byte) []*proxyconfig.Resource {
	t.Helper()
	var docs []string
	for _, doc := range docSeparator.Split(string(in), -1) {
		if strings.Contains(doc, "\nkind: ProxyConfig\n") {
			docs = append(docs, doc)
		}
	}
	pcs, err := config.ParseProxyConfigs(name, []byte(strings.Join(docs, "---\n")))
	if err != nil {
		t.Fatal(err)
	}
	return pcs
}

// TestInjectYAMLPassesOtherKindsThrough keeps non-workload documents byte for byte, comments
// included.
func TestInjectYAMLPassesOtherKindsThrough(t *testing.T) {
	in := []byte("# keep me\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {a: b}\n")
	got, _, err := InjectYAML(in, FileOptions{Params: testParams(true)})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, in) {
		t.Errorf("got\n%s\nwant\n%s", got, in)
	}
}
