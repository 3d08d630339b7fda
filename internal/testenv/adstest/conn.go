package adstest

import (
	"slices"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/structpb"
)

// Dial returns a plaintext client connection to addr, closed when the test
// ends. Cleanups run last-registered first, so streams opened on it later
// are cancelled before it closes.
func Dial(t testing.TB, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// Node returns the node an Istio sidecar sends: id is the Istio node ID
// (type~ip~name.namespace~domain) and the metadata holds the two keys
// Trellis reads, INTERCEPTION_MODE and LABELS. The mode is NONE because test
// proxies bind their own addresses and install no iptables rules; a test
// that needs another mode sets the field on the returned node.
func Node(id string, labels map[string]string) *corev3.Node {
	fields := map[string]*structpb.Value{"INTERCEPTION_MODE": structpb.NewStringValue("NONE")}
	if labels != nil {
		ls := make(map[string]*structpb.Value, len(labels))
		for k, v := range labels {
			ls[k] = structpb.NewStringValue(v)
		}
		fields["LABELS"] = structpb.NewStructValue(&structpb.Struct{Fields: ls})
	}
	return &corev3.Node{Id: id, Metadata: &structpb.Struct{Fields: fields}}
}

// ResourceNames returns the names of the resources in a state-of-the-world
// response, sorted so tests can compare them with slices.Equal.
func ResourceNames(t testing.TB, r *discoveryv3.DiscoveryResponse) []string {
	t.Helper()
	var out []string
	for _, a := range r.Resources {
		m, err := a.UnmarshalNew()
		if err != nil {
			t.Fatalf("%s response: %v", r.TypeUrl, err)
		}
		out = append(out, cachev3.GetResourceName(m))
	}
	slices.Sort(out)
	return out
}

// DeltaResourceNames returns the names of the resources a delta response
// adds or updates, sorted. Delta responses name each resource on the wire,
// so nothing is unmarshalled.
func DeltaResourceNames(r *discoveryv3.DeltaDiscoveryResponse) []string {
	var out []string
	for _, res := range r.Resources {
		out = append(out, res.Name)
	}
	slices.Sort(out)
	return out
}
