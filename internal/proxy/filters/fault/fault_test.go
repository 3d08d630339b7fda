package fault

import (
	"context"
	"net/http"
	"testing"

	"github.com/trellis-mesh/trellis/internal/proxy/filters"
	"github.com/trellis-mesh/trellis/internal/proxy/stats"
	"github.com/trellis-mesh/trellis/internal/proxy/streaminfo"
)

type lookup http.Header

func (l lookup) Get(name string) (string, bool) {
	v := http.Header(l).Get(name)
	return v, v != ""
}

func TestAbortShareIsRoughlyItsPercentage(t *testing.T) {
	c := &Config{HasAbort: true, AbortStatus: 503, AbortFraction: 200_000, AbortBody: DefaultAbortBody}
	f := c.Build(filters.Env{Stats: stats.NewStore(), StatPrefix: "p"})
	aborted := 0
	const n = 20000
	for range n {
		x := &filters.Exchange{Info: &streaminfo.Info{}, Lookup: lookup{}}
		if f.OnRequest(context.Background(), x, nil) == filters.Stop {
			aborted++
		}
	}
	// 20% of 20000 is 4000; the standard deviation is about 57.
	if aborted < 3600 || aborted > 4400 {
		t.Fatalf("aborted %d of %d, want about 20%%", aborted, n)
	}
}

func TestMaxActiveFaultsLetsRequestsThroughWhenReached(t *testing.T) {
	store := stats.NewStore()
	c := &Config{HasDelay: true, Delay: 1 << 62, DelayFraction: filters.Always, HasMaxActive: true, MaxActiveFaults: 0}
	f := c.Build(filters.Env{Stats: store, StatPrefix: "p"})
	x := &filters.Exchange{Info: &streaminfo.Info{}, Lookup: lookup{}}
	if f.OnRequest(context.Background(), x, nil) != filters.Continue || x.Info.Flags != 0 {
		t.Fatal("a fault was injected beyond max_active_faults")
	}
	if store.Counter("http.p.fault.faults_overflow").Value() != 1 {
		t.Fatal("faults_overflow not counted")
	}
}

func TestUpstreamClusterLimitsFaults(t *testing.T) {
	c := &Config{HasAbort: true, AbortStatus: 500, AbortFraction: filters.Always, UpstreamCluster: "ratings"}
	f := c.Build(filters.Env{Stats: stats.NewStore(), StatPrefix: "p"})
	x := &filters.Exchange{Info: &streaminfo.Info{}, Lookup: lookup{}, Cluster: "reviews"}
	if f.OnRequest(context.Background(), x, nil) != filters.Continue {
		t.Fatal("fault applied to another cluster")
	}
	x.Cluster = "ratings"
	if f.OnRequest(context.Background(), x, nil) != filters.Stop || !x.Info.Flags.Has(streaminfo.FaultInjected) {
		t.Fatal("fault not applied to its cluster")
	}
}
