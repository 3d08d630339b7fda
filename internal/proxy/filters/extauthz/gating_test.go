package extauthz_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/trellis-mesh/trellis/internal/proxy/filters"
	"github.com/trellis-mesh/trellis/internal/proxy/filters/extauthz"
	"github.com/trellis-mesh/trellis/internal/proxy/server"
	"github.com/trellis-mesh/trellis/internal/proxy/stats"
	"github.com/trellis-mesh/trellis/internal/proxy/streaminfo"
	"github.com/trellis-mesh/trellis/internal/proxy/upstream"
	"github.com/trellis-mesh/trellis/internal/proxy/xdsconfig"
)

// Istio's CUSTOM action: ext_authz runs only for requests whose RBAC shadow engine picked an
// "istio-ext-authz" policy.
const istioGatedFilter = grpcFilter + `
filter_enabled_metadata:
  filter: envoy.filters.http.rbac
  path: [{key: istio_ext_authz_shadow_effective_policy_id}]
  value: {string_match: {prefix: istio-ext-authz}}
`

// builtFilter converts cfg the way the proxy does (xdsconfig) and builds it over the running
// proxy's clusters, so a test can play the filter before it (RBAC setting dynamic metadata).
func builtFilter(t *testing.T, p *server.Proxy, cfg string) (filters.Filter, *stats.Store) {
	t.Helper()
	l, err := xdsconfig.ParseListener(fromYAML(t, &listenerv3.Listener{}, listenerTmpl, proxyConfig{Filter: filterYAML(cfg)}))
	if err != nil {
		t.Fatal(err)
	}
	spec := l.FilterChains[0].HTTP.HTTPFilters[0]
	store := stats.NewStore()
	lookup := func(name string) *upstream.Cluster {
		for _, c := range p.Clusters() {
			if c.Name() == name {
				return c
			}
		}
		return nil
	}
	return spec.Config.Build(filters.Env{Stats: store, StatPrefix: "gated", Clusters: lookup}), store
}

func exchange(authz string, md map[string]*structpb.Struct) *filters.Exchange {
	return &filters.Exchange{
		Method: "GET", Path: "/orders", Authority: "shop", Cluster: "app",
		Headers: http.Header{"Authorization": {authz}},
		Info:    &streaminfo.Info{Start: time.Now(), Protocol: "HTTP/1.1", DownstreamRemoteAddr: "127.0.0.1:5555", DynamicMetadata: md},
	}
}

func shadowResult(policy string) map[string]*structpb.Struct {
	return map[string]*structpb.Struct{"envoy.filters.http.rbac": {Fields: map[string]*structpb.Value{
		"istio_ext_authz_shadow_effective_policy_id": structpb.NewStringValue(policy),
	}}}
}

func TestFilterEnabledMetadataRunsTheCheckOnlyForSelectedRequests(t *testing.T) {
	app, auth := newApp(t), newAuthGRPC(t)
	p, _ := startProxy(t, proxyConfig{Filter: filterYAML(grpcFilter), App: app.addr, Authz: auth.addr, AuthzH2: true})
	f, store := builtFilter(t, p, istioGatedFilter)
	ctx := context.Background()

	// Not selected by a CUSTOM policy: no call, even for a user the service would deny.
	for _, md := range []map[string]*structpb.Struct{nil, shadowResult("ns[default]-policy[other]-rule[0]")} {
		x := exchange("Bearer bob", md)
		if st := f.OnRequest(ctx, x, nil); st != filters.Continue {
			t.Fatalf("metadata %v: filter stopped the request (%+v); want it skipped", md, x.Reply())
		}
	}
	if auth.lastRequest() != nil {
		t.Fatal("the service was called for requests no CUSTOM policy selected")
	}
	if got := store.Counter("http.gated.ext_authz.disabled").Value(); got != 2 {
		t.Errorf("disabled = %d, want 2", got)
	}

	// Selected: checked, and denied.
	x := exchange("Bearer bob", shadowResult("istio-ext-authz-ns[default]-policy[ext]-rule[0]"))
	if st := f.OnRequest(ctx, x, nil); st != filters.Stop || x.Reply().Status != http.StatusUnauthorized || x.Reply().Details != extauthz.DetailsDenied {
		t.Fatalf("selected request: status %v reply %+v; want the service's 401 denial", st, x.Reply())
	}
	if !x.Info.Flags.Has(streaminfo.UnauthorizedExternalService) {
		t.Errorf("flags %v, want UAEX", x.Info.Flags)
	}

	// Selected and allowed: the service's dynamic metadata lands under the filter's name.
	x = exchange("Bearer alice", shadowResult("istio-ext-authz-ns[default]-policy[ext]-rule[0]"))
	if st := f.OnRequest(ctx, x, nil); st != filters.Continue {
		t.Fatalf("allowed request stopped: %+v", x.Reply())
	}
	if got := x.Info.DynamicMetadata[extauthz.Name].GetFields()["user"].GetStringValue(); got != "alice" {
		t.Errorf("dynamic metadata user = %q, want alice", got)
	}
	if x.Headers.Get("X-User-Id") != "alice" {
		t.Errorf("request headers %v lack the service's X-User-Id", x.Headers)
	}
}

func TestDenyAtDisableRefusesRequestsTheFilterSkips(t *testing.T) {
	app, auth := newApp(t), newAuthGRPC(t)
	p, _ := startProxy(t, proxyConfig{Filter: filterYAML(grpcFilter), App: app.addr, Authz: auth.addr, AuthzH2: true})
	f, _ := builtFilter(t, p, istioGatedFilter+"deny_at_disable: {default_value: true, runtime_key: k}\n")
	x := exchange("Bearer alice", nil)
	if st := f.OnRequest(context.Background(), x, nil); st != filters.Stop || x.Reply().Status != http.StatusForbidden || x.Reply().Details != extauthz.DetailsError {
		t.Fatalf("got %v %+v, want a 403 ext_authz_error", st, x.Reply())
	}
}
