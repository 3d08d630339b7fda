package translate

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/trellis-mesh/trellis/internal/config"
	"github.com/trellis-mesh/trellis/internal/model"
	"github.com/trellis-mesh/trellis/internal/proxy/xdsconfig"
)

// TestTrellisProxyAcceptsEveryTranslation feeds every golden case's translation to trellis-proxy's
// conversion layer, which NACKs whatever the proxy cannot honour: what the control plane generates
// must apply on its own data plane. (Only a test may import both sides.)
func TestTrellisProxyAcceptsEveryTranslation(t *testing.T) {
	cases, err := os.ReadDir("testdata")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		if !c.IsDir() {
			continue
		}
		dir := filepath.Join("testdata", c.Name())
		cfg, _, err := config.LoadDir(dir)
		if err != nil {
			t.Fatalf("load %s: %v", dir, err)
		}
		snap := model.NewSnapshot(cfg)
		for _, p := range readProxies(t, filepath.Join(dir, "proxies.txt")) {
			t.Run(c.Name()+"/"+p.Name, func(t *testing.T) {
				res, err := Build(snap, p)
				if err != nil {
					t.Fatalf("Build: %v", err)
				}
				for _, l := range res.Listeners {
					if _, err := xdsconfig.ParseListener(l); err != nil {
						t.Errorf("proxy NACKs listener: %v", err)
					}
				}
				for _, rc := range res.Routes {
					if _, err := xdsconfig.ParseRouteConfiguration(rc); err != nil {
						t.Errorf("proxy NACKs routes: %v", err)
					}
				}
				for _, cl := range res.Clusters {
					if _, err := xdsconfig.ParseCluster(cl); err != nil {
						t.Errorf("proxy NACKs cluster: %v", err)
					}
				}
				for _, cla := range res.Endpoints {
					if _, err := xdsconfig.ParseLoadAssignment(cla); err != nil {
						t.Errorf("proxy NACKs endpoints: %v", err)
					}
				}
			})
		}
	}
}
