package proxy

import (
	"testing"

	"github.com/trellis-mesh/trellis/internal/proxy/xdsconfig"
)

// FuzzParseBootstrap feeds arbitrary YAML or JSON to the bootstrap parser: a broken file is an
// error, never a panic. The seed corpus, testdata/fuzz/FuzzParseBootstrap, holds valid bootstraps
// and broken ones.
func FuzzParseBootstrap(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := ParseBootstrap(data)
		if err != nil {
			return
		}
		// What Run does with a parsed bootstrap must not panic either.
		_, _ = xdsAddress(b, "")
		_ = adminAddress(b, "")
		_ = buildNode(b.GetNode(), &Options{NodeID: "sidecar~127.0.1.3~a.b~b.svc.cluster.local", Metadata: map[string]string{"K": "V"}})
		for _, l := range b.GetStaticResources().GetListeners() {
			_, _ = xdsconfig.ParseListener(l)
		}
		for _, c := range b.GetStaticResources().GetClusters() {
			_, _ = xdsconfig.ParseCluster(c)
		}
	})
}
