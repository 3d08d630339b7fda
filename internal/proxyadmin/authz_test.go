package proxyadmin

import (
	"reflect"
	"testing"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
)

// A dump as a real Envoy with Istio's extensions writes it: filters of types this build does
// not know (istio.stats, a Wasm filter) sit between the ones we read, and a TCP chain has the
// network RBAC filter. The unknown ones are skipped, not errors.
const envoyDump = `{"configs": [
 {"@type": "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump", "bootstrap": {"node": {"id": "sidecar~10.0.0.1~a.foo~foo.svc.cluster.local"}}},
 {"@type": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump", "dynamic_listeners": [
  {"name": "virtualInbound", "active_state": {"listener": {
   "@type": "type.googleapis.com/envoy.config.listener.v3.Listener",
   "name": "virtualInbound", "traffic_direction": "INBOUND",
   "filter_chains": [
    {"name": "inbound_0.0.0.0_9000", "filters": [
     {"name": "istio.metadata_exchange", "typed_config": {"@type": "type.googleapis.com/envoy.tcp.metadataexchange.config.MetadataExchange", "protocol": "istio-peer-exchange"}},
     {"name": "envoy.filters.network.rbac", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC",
      "stat_prefix": "tcp.", "rules": {"action": "DENY", "policies": {"ns[foo]-policy[deny-db]-rule[0]": {"permissions": [{"any": true}], "principals": [{"any": true}]}}}}},
     {"name": "envoy.filters.network.tcp_proxy", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy", "cluster": "inbound|9000||"}}]},
    {"name": "inbound_0.0.0.0_8080", "filters": [
     {"name": "envoy.filters.network.http_connection_manager", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
      "stat_prefix": "inbound_0.0.0.0_8080",
      "http_filters": [
       {"name": "istio.wasm", "typed_config": {"@type": "type.googleapis.com/udpa.type.v1.TypedStruct", "type_url": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm", "value": {"config": {}}}},
       {"name": "envoy.filters.http.rbac", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
        "rules": {"policies": {}}, "shadow_rules": {"action": "DENY", "policies": {"ns[foo]-policy[dry]-rule[0]": {"permissions": [{"any": true}], "principals": [{"any": true}]}}}, "shadow_rules_stat_prefix": "istio_dry_run_allow_"}},
       {"name": "envoy.filters.http.router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}}]}]}}},
  {"name": "0.0.0.0_80", "active_state": {"listener": {"@type": "type.googleapis.com/envoy.config.listener.v3.Listener", "name": "0.0.0.0_80", "traffic_direction": "OUTBOUND"}}}]},
 {"@type": "type.googleapis.com/envoy.admin.v3.SecretsConfigDump"}
]}`

func TestAuthzReadsAnEnvoyDumpWithExtensionsItDoesNotKnow(t *testing.T) {
	d := &adminv3.ConfigDump{}
	if err := Decode([]byte(envoyDump), d); err != nil {
		t.Fatalf("Decode: %v", err)
	}
	got, skipped, err := Authz(d)
	if err != nil {
		t.Fatal(err)
	}
	want := []ListenerAuthz{{Listener: "virtualInbound", Direction: "INBOUND", Chains: []ChainAuthz{
		{Chains: []Chain{{Name: "inbound_0.0.0.0_9000", Transport: TransportPlaintext}},
			Filters: []Filter{{Kind: KindRBACTCP, Action: "DENY", Policies: []string{"ns[foo]-policy[deny-db]-rule[0]"}, StatPrefix: "tcp."}}},
		{Chains: []Chain{{Name: "inbound_0.0.0.0_8080", Transport: TransportPlaintext}},
			Filters: []Filter{
				{Kind: KindRBAC, Action: "ALLOW"}, // allow-nothing
				{Kind: KindRBAC, Action: "SHADOW DENY", Policies: []string{"ns[foo]-policy[dry]-rule[0]"}, StatPrefix: "istio_dry_run_allow_"},
			}},
	}}}
	if !reflect.DeepEqual(got, want) || skipped != 1 {
		t.Errorf("Authz = %+v, skipped %d\nwant %+v, skipped 1", got, skipped, want)
	}
	if s, err := Secrets(d, time.Now()); err != nil || len(s) != 0 {
		t.Errorf("Secrets of an empty SecretsConfigDump = %v, %v; want none", s, err)
	}
}
