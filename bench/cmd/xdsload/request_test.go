package main

import (
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
)

func TestSotwRequestIsTheRequestProtoWouldEncode(t *testing.T) {
	c := &client{}
	names := []string{"outbound|80||svc-1.ns-0.svc.cluster.local", "outbound|80||svc-2.ns-1.svc.cluster.local"}
	for _, tc := range []struct {
		name  string
		head  *discoveryv3.DiscoveryRequest
		names []string
	}{
		{"first, with node", &discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.ClusterType, Node: &corev3.Node{Id: "sidecar~10.0.0.1~a.ns~ns.svc.cluster.local"}}, nil},
		{"EDS ACK", &discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.EndpointType, VersionInfo: "v1", ResponseNonce: "7"}, names},
		{"EDS ACK again", &discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.EndpointType, VersionInfo: "v2", ResponseNonce: "8"}, names},
		{"new subscription", &discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.EndpointType, VersionInfo: "v2"}, names[:1]},
	} {
		want := proto.Clone(tc.head).(*discoveryv3.DiscoveryRequest)
		want.ResourceNames = tc.names
		msg, err := adsCodec.Marshal(&sotwRequest{head: tc.head, names: c.encodedNames(typeIdx(tc.head.TypeUrl), tc.names)})
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		got := &discoveryv3.DiscoveryRequest{}
		if err := proto.Unmarshal(msg.Materialize(), got); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if !proto.Equal(got, want) {
			t.Errorf("%s: decoded %v, want %v", tc.name, got, want)
		}
	}
}

func TestClientsAskingTheSameNamesShareOneEncoding(t *testing.T) {
	a, b := &client{}, &client{}
	names := []string{"x", "y"}
	wa := a.encodedNames(2, names)
	wb := b.encodedNames(2, append([]string(nil), names...))
	if &wa[0] != &wb[0] {
		t.Error("two clients asking for the same names hold two encodings")
	}
}
