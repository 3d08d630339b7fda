package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/proxy"
)

func TestParseCPUListExpandsRanges(t *testing.T) {
	got, err := parseCPUList("0-2,5,8-9")
	if err != nil || !slices.Equal(got, []int{0, 1, 2, 5, 8, 9}) {
		t.Fatalf("got %v, %v", got, err)
	}
	for _, bad := range []string{"", "a", "3-1", "1-x"} {
		if _, err := parseCPUList(bad); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

func TestPlanLayoutGivesTheRigTheCPUsTheProxyDoesNotUse(t *testing.T) {
	for _, tc := range []struct {
		cores    int
		cpus     []int
		want     layout
		wantFail bool
	}{
		{1, []int{0, 1}, layout{Cores: 1, ProxyCPUs: "0", RigCPUs: "1", RigCores: 1}, false},
		{2, []int{0, 1}, layout{Cores: 2, ProxyCPUs: "0,1", RigCPUs: "", RigCores: 2}, false}, // shared
		{2, []int{2, 3, 4, 5}, layout{Cores: 2, ProxyCPUs: "2,3", RigCPUs: "4,5", RigCores: 2}, false},
		{2, []int{0}, layout{}, true},
	} {
		got, err := planLayout(tc.cores, tc.cpus)
		if (err != nil) != tc.wantFail || got != tc.want {
			t.Errorf("planLayout(%d, %v) = %+v, %v; want %+v", tc.cores, tc.cpus, got, err, tc.want)
		}
	}
}

func TestQuantileIsNearestRank(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 100; i++ {
		d = append(d, time.Duration(i))
	}
	for q, want := range map[float64]time.Duration{0.5: 50, 0.9: 90, 0.99: 99, 0.999: 100, 1: 100} {
		if got := quantile(d, q); got != want {
			t.Errorf("quantile(%v) = %v, want %v", q, got, want)
		}
	}
	if quantile(nil, 0.99) != 0 {
		t.Error("quantile of nothing")
	}
}

func TestBackendBodyIsOneKilobyteOfQuotableText(t *testing.T) {
	b := backendBody()
	if len(b) != bodySize || strings.ContainsAny(b, `"\$;{}`) {
		t.Fatalf("body: %d bytes, %q", len(b), b[:80])
	}
}

func testHop(t *testing.T, extra int) hop {
	h := hop{Dir: t.TempDir(), Port: 10001, Upstream: 10002, Cores: 1}
	for i := 1; i <= extra; i++ {
		h.Extra = append(h.Extra, i)
	}
	return h
}

func TestTrellisBootstrapWith100ClustersIsAValidEnvoyBootstrap(t *testing.T) {
	var buf bytes.Buffer
	if err := trellisTemplate.Execute(&buf, testHop(t, 99)); err != nil {
		t.Fatal(err)
	}
	b, err := proxy.ParseBootstrap(buf.Bytes())
	if err != nil {
		t.Fatalf("%v\n%s", err, buf.String())
	}
	sr := b.GetStaticResources()
	if len(sr.GetClusters()) != 100 || len(sr.GetListeners()) != 1 {
		t.Fatalf("%d clusters, %d listeners", len(sr.GetClusters()), len(sr.GetListeners()))
	}
}

// The peers' configs are checked by the peers themselves where they are installed
// (`make bench` installs them; `make test` does not).
func TestPeerConfigsPassTheirOwnSyntaxCheck(t *testing.T) {
	for _, tc := range []struct {
		tool string
		args func(file string) []string
		name string
		exec func(*bytes.Buffer, hop) error
	}{
		{"nginx", func(f string) []string {
			return []string{"-t", "-p", filepath.Dir(f), "-e", filepath.Join(filepath.Dir(f), "error.log"), "-c", f}
		},
			"nginx.conf", func(b *bytes.Buffer, h hop) error { return nginxTemplate.Execute(b, h) }},
		{"haproxy", func(f string) []string { return []string{"-c", "-f", f} },
			"haproxy.cfg", func(b *bytes.Buffer, h hop) error { return haproxyTemplate.Execute(b, h) }},
	} {
		bin, err := lookTool(tc.tool)
		if err != nil {
			t.Logf("%s not installed: config not checked", tc.tool)
			continue
		}
		h := testHop(t, 3)
		var buf bytes.Buffer
		if err := tc.exec(&buf, h); err != nil {
			t.Fatal(err)
		}
		file := filepath.Join(h.Dir, tc.name)
		if err := os.WriteFile(file, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(bin, tc.args(file)...).CombinedOutput(); err != nil {
			t.Errorf("%s rejects its config: %v\n%s\n%s", tc.tool, err, out, buf.String())
		}
	}
}
