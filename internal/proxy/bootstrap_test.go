package proxy

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/trellis-mesh/trellis/internal/proxy/apphealth"
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

func TestProxyConfigIsSentAsAStructAndTheProbeItTellsOfIsRun(t *testing.T) {
	const id = "sidecar~10.0.5.7~reviews-vm.bookinfo~bookinfo.svc.cluster.local"
	pc, err := apphealth.ParseProxyConfig([]byte("readinessProbe: {tcpSocket: {port: 9080}}"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := ParseBootstrap([]byte(`node: {metadata: {PROXY_CONFIG: "a string the control plane cannot read"}}`))
	if err != nil {
		t.Fatal(err)
	}
	node := buildNode(b.GetNode(), &Options{NodeID: id, ProxyConfig: pc, Metadata: map[string]string{"PROXY_CONFIG": "flag"}})
	sent := node.GetMetadata().GetFields()[KeyProxyConfig].GetStructValue()
	if port := sent.GetFields()["readinessProbe"].GetStructValue().GetFields()["tcpSocket"].GetStructValue().GetFields()["port"].GetNumberValue(); port != 9080 {
		t.Fatalf("node metadata PROXY_CONFIG = %v, want the ProxyConfig option as a Struct", node.GetMetadata().GetFields()[KeyProxyConfig])
	}
	if p, err := readinessProbe(node, pc); err != nil || p != pc.ReadinessProbe {
		t.Errorf("probe run = %+v, %v; want the option's", p, err)
	}

	// A bootstrap written for Istio's agent carries PROXY_CONFIG itself: its probe is run too, or
	// the control plane would wait forever for a report.
	b, err = ParseBootstrap([]byte(`node: {metadata: {PROXY_CONFIG: {readinessProbe: {tcpSocket: {port: 3306}, failureThreshold: 3}}}}`))
	if err != nil {
		t.Fatal(err)
	}
	p, err := readinessProbe(buildNode(b.GetNode(), &Options{NodeID: id}), nil)
	if err != nil || p == nil || p.TCPSocket == nil || p.TCPSocket.Port != 3306 || p.FailureThreshold != 3 {
		t.Errorf("probe from the bootstrap = %+v, %v; want tcpSocket 3306, failureThreshold 3", p, err)
	}
	if p, err := readinessProbe(buildNode(nil, &Options{NodeID: id}), nil); p != nil || err != nil {
		t.Errorf("probe without any PROXY_CONFIG = %+v, %v; want none", p, err)
	}

	b, err = ParseBootstrap([]byte(`node: {metadata: {PROXY_CONFIG: {readinessProbe: {tcpSocket: {port: 0}}}}}`))
	if err != nil {
		t.Fatal(err)
	}
	err = Run(context.Background(), Options{Bootstrap: b, NodeID: id, XDSAddress: "127.0.0.1:1", Logger: slog.New(slog.DiscardHandler)})
	if want := "node.metadata.PROXY_CONFIG: readinessProbe.tcpSocket.port: must be between 1 and 65535, got 0"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("Run with a bad probe in the bootstrap = %v, want an error containing %q", err, want)
	}
}
