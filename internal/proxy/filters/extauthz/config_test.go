package extauthz_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"

	"github.com/trellis-mesh/trellis/internal/proxy/filters"
	"github.com/trellis-mesh/trellis/internal/proxy/stats"
	"github.com/trellis-mesh/trellis/internal/proxy/xdsconfig"
)

func TestConfigTheProxyCannotHonourIsRejected(t *testing.T) {
	for name, tc := range map[string]struct{ cfg, want string }{
		"clear_route_cache":  {httpFilter + "clear_route_cache: true\n", "clear_route_cache"},
		"google_grpc":        {"grpc_service: {google_grpc: {target_uri: x, stat_prefix: \"s\"}}\n", "google_grpc"},
		"no service":         {"failure_mode_allow: true\n", "grpc_service or http_service"},
		"formatter in value": {strings.Replace(httpFilter, `value: "yes"`, `value: "%DOWNSTREAM_REMOTE_ADDRESS%"`, 1), "headers_to_add[0]"},
		"both allowed lists": {httpFilter + "allowed_headers: {patterns: [{exact: a}]}\n", "allowed_headers"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := xdsconfig.ParseListener(fromYAML(t, &listenerv3.Listener{}, listenerTmpl, proxyConfig{Filter: filterYAML(tc.cfg)}))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one naming %q", err, tc.want)
			}
			if name == "clear_route_cache" && !errors.Is(err, xdsconfig.ErrUnsupported) {
				t.Errorf("err = %v, want ErrUnsupported", err)
			}
		})
	}
}

// BenchmarkSkippedRequest is the cost on requests the filter does not check (Istio's CUSTOM
// gating): it must not allocate.
func BenchmarkSkippedRequest(b *testing.B) {
	l, err := xdsconfig.ParseListener(fromYAML(b, &listenerv3.Listener{}, listenerTmpl, proxyConfig{Filter: filterYAML(istioGatedFilter)}))
	if err != nil {
		b.Fatal(err)
	}
	f := l.FilterChains[0].HTTP.HTTPFilters[0].Config.Build(filters.Env{Stats: stats.NewStore(), StatPrefix: "b"})
	x := exchange("Bearer alice", shadowResult("ns[default]-policy[other]-rule[0]"))
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if f.OnRequest(ctx, x, nil) != filters.Continue {
			b.Fatal("stopped")
		}
	}
}
