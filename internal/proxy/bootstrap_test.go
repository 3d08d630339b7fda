package proxy

import (
	"testing"
)

func TestNodeIdentityFromFlagsOverBootstrap(t *testing.T) {
	b, err := ParseBootstrap([]byte(`
node:
  id: from-file
  cluster: file-cluster
  metadata: {KEEP: "yes"}
`))
	if err != nil {
		t.Fatal(err)
	}
	node := buildNode(b.GetNode(), &Options{
		NodeID:   "sidecar~127.0.1.3~reviews-v1.default~default.svc.cluster.local",
		Metadata: map[string]string{"INTERCEPTION_MODE": "NONE"},
	})
	if node.GetId() != "sidecar~127.0.1.3~reviews-v1.default~default.svc.cluster.local" || node.GetCluster() != "file-cluster" {
		t.Fatalf("node %v", node)
	}
	md := node.GetMetadata().GetFields()
	if md["INTERCEPTION_MODE"].GetStringValue() != "NONE" || md["KEEP"].GetStringValue() != "yes" || node.GetUserAgentName() != "trellis-proxy" {
		t.Fatalf("metadata %v", md)
	}
	node = buildNode(nil, &Options{NodeID: "sidecar~127.0.1.3~reviews-v1.default~default.svc.cluster.local"})
	if node.GetCluster() != "reviews-v1.default" {
		t.Fatalf("derived cluster %q", node.GetCluster())
	}
}

func TestXDSAddressComesFromTheADSClusterOfTheBootstrap(t *testing.T) {
	b, err := ParseBootstrap([]byte(`
dynamic_resources:
  ads_config:
    api_type: GRPC
    transport_api_version: V3
    grpc_services: [{envoy_grpc: {cluster_name: xds-grpc}}]
  lds_config: {ads: {}, resource_api_version: V3}
  cds_config: {ads: {}, resource_api_version: V3}
static_resources:
  clusters:
  - name: xds-grpc
    type: STATIC
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http2_protocol_options: {}}
    load_assignment:
      cluster_name: xds-grpc
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 15010}}}}]}]
admin:
  address: {socket_address: {address: 127.0.1.3, port_value: 15000}}
`))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := xdsAddress(b, ""); err != nil || got != "127.0.0.1:15010" {
		t.Fatalf("got %q %v", got, err)
	}
	if got, _ := xdsAddress(b, "10.0.0.1:15010"); got != "10.0.0.1:15010" {
		t.Fatalf("explicit address ignored: %q", got)
	}
	if got := adminAddress(b, "127.0.0.1:15000"); got != "127.0.1.3:15000" {
		t.Fatalf("admin %q", got)
	}
	if _, err := ParseBootstrap([]byte("static_resources: {no_such_field: 1}")); err == nil {
		t.Fatal("unknown bootstrap field accepted")
	}
}
