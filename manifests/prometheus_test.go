package manifests

import (
	"net"
	"net/netip"
	"os"
	"slices"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/trellis-mesh/trellis/internal/config"
	"github.com/trellis-mesh/trellis/internal/controlplane"
)

type promConfig struct {
	ScrapeConfigs []struct {
		JobName       string `yaml:"job_name"`
		MetricsPath   string `yaml:"metrics_path"`
		StaticConfigs []struct {
			Targets []string `yaml:"targets"`
		} `yaml:"static_configs"`
		KubernetesSDConfigs []struct {
			Role string `yaml:"role"`
		} `yaml:"kubernetes_sd_configs"`
	} `yaml:"scrape_configs"`
}

func readPromConfig(t *testing.T, path string) promConfig {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var c promConfig
	if err := yaml.Unmarshal(raw, &c); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return c
}

// The local config must scrape exactly the proxies `trellis up` starts for
// the demo (one per loopback WorkloadEntry, on Istio's 15020) and the
// control plane's default debug address.
func TestLocalPrometheusConfigScrapesTheDemoMesh(t *testing.T) {
	cfg, _, err := config.LoadDir("../examples/demo/config")
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, we := range cfg.WorkloadEntries {
		if a, err := netip.ParseAddr(we.Spec.GetAddress()); err == nil && a.IsLoopback() {
			want = append(want, net.JoinHostPort(a.String(), "15020"))
		}
	}
	slices.Sort(want)

	jobs := map[string][]string{}
	paths := map[string]string{}
	for _, sc := range readPromConfig(t, "prometheus/prometheus-local.yaml").ScrapeConfigs {
		for _, st := range sc.StaticConfigs {
			jobs[sc.JobName] = append(jobs[sc.JobName], st.Targets...)
		}
		paths[sc.JobName] = sc.MetricsPath
	}
	got := slices.Sorted(slices.Values(jobs["trellis-proxies"]))
	if !slices.Equal(got, want) || paths["trellis-proxies"] != "/stats/prometheus" {
		t.Errorf("trellis-proxies scrapes %v at %q, want %v at /stats/prometheus", got, paths["trellis-proxies"], want)
	}
	if cp := jobs["trellis-control-plane"]; !slices.Equal(cp, []string{controlplane.DefaultDebugAddress}) || paths["trellis-control-plane"] != "/metrics" {
		t.Errorf("trellis-control-plane scrapes %v at %q, want %s/metrics", cp, paths["trellis-control-plane"], controlplane.DefaultDebugAddress)
	}
}

func TestKubernetesPrometheusConfigDiscoversPodsAndControlPlane(t *testing.T) {
	jobs := map[string]string{}
	for _, sc := range readPromConfig(t, "prometheus/prometheus-kubernetes.yaml").ScrapeConfigs {
		for _, sd := range sc.KubernetesSDConfigs {
			jobs[sc.JobName] = sd.Role
		}
	}
	if jobs["kubernetes-pods"] != "pod" || jobs["trellis-control-plane"] != "pod" {
		t.Errorf("jobs = %v, want kubernetes-pods and trellis-control-plane with pod discovery", jobs)
	}
}
