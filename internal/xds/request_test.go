package xds

import (
	"fmt"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

func clusterNames(n int) []string {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("outbound|80||svc-%d.ns-%d.svc.cluster.local", i, i%20)
	}
	return names
}

// checkDecodesAsProto decodes b both ways, as each request type, and
// fails unless they agree; it returns the DiscoveryRequest.
func checkDecodesAsProto(t *testing.T, b []byte) *discoveryv3.DiscoveryRequest {
	t.Helper()
	var sotw *discoveryv3.DiscoveryRequest
	for _, m := range []proto.Message{&discoveryv3.DiscoveryRequest{}, &discoveryv3.DeltaDiscoveryRequest{}} {
		want := m.ProtoReflect().New().Interface()
		wantErr := proto.Unmarshal(b, want)
		got := m.ProtoReflect().New().Interface()
		err := unmarshalRequest(b, got)
		if (err != nil) != (wantErr != nil) {
			t.Fatalf("%T: error %v, proto.Unmarshal's %v", m, err, wantErr)
		}
		if err == nil && !proto.Equal(got, want) {
			t.Fatalf("%T: decoded %v\nproto.Unmarshal: %v", m, got, want)
		}
		if r, ok := got.(*discoveryv3.DiscoveryRequest); ok {
			sotw = r
		}
	}
	return sotw
}

func TestRequestDecodesAsProtoUnmarshalWithNamesShared(t *testing.T) {
	full := &discoveryv3.DiscoveryRequest{
		VersionInfo: "v1", Node: &corev3.Node{Id: "sidecar~10.0.0.1~a.ns~ns.svc.cluster.local"},
		ResourceNames: clusterNames(100), TypeUrl: resourcev3.EndpointType, ResponseNonce: "7",
		ErrorDetail: &status.Status{Code: 3, Message: "rejected"},
	}
	b, err := proto.Marshal(full)
	if err != nil {
		t.Fatal(err)
	}
	first := checkDecodesAsProto(t, b)
	again := checkDecodesAsProto(t, append([]byte(nil), b...))
	if &first.ResourceNames[0] != &again.ResourceNames[0] {
		t.Error("two requests with the same names decoded them twice")
	}
	delta := &discoveryv3.DeltaDiscoveryRequest{}
	db, _ := proto.Marshal(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNamesSubscribe: full.ResourceNames})
	if err := unmarshalRequest(db, delta); err != nil || &delta.ResourceNamesSubscribe[0] != &first.ResourceNames[0] {
		t.Errorf("a delta subscription to the same names did not share them (err %v)", err)
	}
	other := proto.Clone(full).(*discoveryv3.DiscoveryRequest)
	other.ResourceNames[99] = "outbound|80||other.ns.svc.cluster.local"
	ob, _ := proto.Marshal(other)
	if got := checkDecodesAsProto(t, ob); &got.ResourceNames[0] == &first.ResourceNames[0] {
		t.Error("other names were given the first request's slice")
	}

	// Names after other fields, split around them, with the wrong wire
	// type, not valid UTF-8, or cut short: whatever proto.Unmarshal does.
	names := proto.Clone(full).(*discoveryv3.DiscoveryRequest)
	names.VersionInfo, names.ResponseNonce = "", ""
	nb, _ := proto.Marshal(&discoveryv3.DiscoveryRequest{ResourceNames: clusterNames(50)})
	tail := protowire.AppendString(protowire.AppendTag(nil, 5, protowire.BytesType), "9")
	badUTF8 := protowire.AppendString(protowire.AppendTag(nil, resourceNamesField, protowire.BytesType), "\xff\xfe")
	varint := protowire.AppendVarint(protowire.AppendTag(nil, resourceNamesField, protowire.VarintType), 1)
	for name, b := range map[string][]byte{
		"names last":            append(append([]byte(nil), tail...), nb...),
		"names split":           append(append(append([]byte(nil), nb...), tail...), nb...),
		"invalid UTF-8":         append(append([]byte(nil), nb...), badUTF8...),
		"names with varint":     append(append([]byte(nil), nb...), varint...),
		"truncated":             b[:len(b)-3],
		"truncated in the list": b[:len(b)/2],
	} {
		t.Run(name, func(t *testing.T) { checkDecodesAsProto(t, b) })
	}
}

func FuzzDiscoveryRequest(f *testing.F) {
	b, _ := proto.Marshal(&discoveryv3.DiscoveryRequest{ResourceNames: clusterNames(30), TypeUrl: resourcev3.EndpointType, ResponseNonce: "1"})
	f.Add(b)
	f.Add(b[:len(b)/2])
	f.Fuzz(func(t *testing.T, b []byte) { checkDecodesAsProto(t, b) })
}
