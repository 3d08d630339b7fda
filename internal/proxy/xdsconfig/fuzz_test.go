package xdsconfig

import (
	"net/http"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"

	"github.com/trellis-mesh/trellis/internal/proxy/route"
)

// The fuzz targets below feed proto wire bytes, as a control plane would send them, through the
// conversion layer: whatever the bytes, a Parse function returns config or an error, never panics.
// Their seed corpora in testdata/fuzz/<FuzzName>/ are the resources of the translate golden files
// (internal/translate/testdata), marshalled, so mutation starts from config Trellis really serves,
// plus a few unit_* seeds reaching the matchers, rewrites and options the golden files do not use.

func FuzzParseListener(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		var l listenerv3.Listener
		if proto.Unmarshal(data, &l) != nil {
			return
		}
		out, err := ParseListener(&l)
		if err != nil {
			return
		}
		chains := out.FilterChains
		if out.DefaultChain != nil {
			chains = append(chains, out.DefaultChain)
		}
		if len(chains) == 0 {
			t.Fatalf("accepted listener without a filter chain: %+v", out)
		}
		for _, c := range chains {
			if (c.HTTP == nil) == (c.TCP == nil) {
				t.Fatalf("accepted filter chain without exactly one terminal filter: %+v", c)
			}
		}
	})
}

func FuzzParseRouteConfiguration(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		var rc routev3.RouteConfiguration
		if proto.Unmarshal(data, &rc) != nil {
			return
		}
		tbl, err := ParseRouteConfiguration(&rc)
		if err != nil {
			return
		}
		if tbl == nil {
			t.Fatal("nil table without an error")
		}
		// An accepted table must also be usable: route a request to every domain it names, and
		// rewrite and mutate headers as the connection manager would.
		for _, vh := range tbl.VirtualHosts {
			for _, d := range vh.Domains {
				for _, path := range []string{"/", "/api/v1/items?x=1"} {
					routeOnce(tbl, strings.ReplaceAll(d, "*", "x"), path)
				}
			}
		}
	})
}

func routeOnce(tbl *route.Table, authority, path string) {
	h := http.Header{"End-User": {"jason"}, "X-Request-Id": {"1"}}
	vh, rt := tbl.Select(&route.Request{Authority: authority, Path: path, Headers: headerGetter(h)})
	if rt == nil {
		return
	}
	if rt.Action.Redirect != nil {
		_ = rt.RedirectLocation("http", authority, path)
		return
	}
	if rt.Action.Direct != nil {
		return
	}
	_, wc := rt.Action.Pick(uint64(len(path)))
	_, _ = rt.RewritePath(path)
	_ = rt.UpstreamHost(authority, path, headerGetter(h))
	req, resp := tbl.Mutations(vh, rt, wc)
	route.ApplyAll(req, h)
	route.ApplyAll(resp, http.Header{})
}

type headerGetter http.Header

func (h headerGetter) Get(name string) (string, bool) {
	v, ok := h[name]
	if !ok || len(v) == 0 {
		return "", false
	}
	return v[0], true
}

func FuzzParseCluster(f *testing.F) {
	f.Fuzz(func(_ *testing.T, data []byte) {
		var c clusterv3.Cluster
		if proto.Unmarshal(data, &c) != nil {
			return
		}
		_, _ = ParseCluster(&c)
	})
}

func FuzzParseLoadAssignment(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		var cla endpointv3.ClusterLoadAssignment
		if proto.Unmarshal(data, &cla) != nil {
			return
		}
		eps, err := ParseLoadAssignment(&cla)
		if err != nil {
			return
		}
		for _, ep := range eps {
			if ep.Weight == 0 {
				t.Fatalf("endpoint %s with weight 0", ep.Address)
			}
		}
	})
}
