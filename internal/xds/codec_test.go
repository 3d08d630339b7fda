package xds

import (
	"testing"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// A shared body plus a stream's nonce decodes as the whole response would,
// for both variants (nonce is field 5 in each), and the body is not
// touched, so the next stream can send it with its own nonce.
func TestRawResponseDecodesAsTheWholeResponse(t *testing.T) {
	res := []*anypb.Any{{TypeUrl: resourcev3.ClusterType, Value: []byte("\x0a\x01a")}, {TypeUrl: resourcev3.ClusterType, Value: []byte("\x0a\x01b")}}
	for _, want := range []proto.Message{
		&discoveryv3.DiscoveryResponse{VersionInfo: "v1", Resources: res, TypeUrl: resourcev3.ClusterType, Nonce: "17"},
		&discoveryv3.DeltaDiscoveryResponse{SystemVersionInfo: "v1", TypeUrl: resourcev3.ClusterType, RemovedResources: []string{"c"}, Nonce: "17",
			Resources: []*discoveryv3.Resource{{Name: "a", Version: "1", Resource: res[0]}}},
	} {
		noNonce := proto.Clone(want)
		switch m := noNonce.(type) {
		case *discoveryv3.DiscoveryResponse:
			m.Nonce = ""
		case *discoveryv3.DeltaDiscoveryResponse:
			m.Nonce = ""
		}
		body, err := proto.Marshal(noNonce)
		if err != nil {
			t.Fatal(err)
		}
		before := string(body)
		c := newCodec()
		for _, nonce := range []string{"17", "18"} {
			out, err := c.Marshal(&rawResponse{body: body, nonce: nonce})
			if err != nil {
				t.Fatal(err)
			}
			got := want.ProtoReflect().New().Interface()
			if err := proto.Unmarshal(out.Materialize(), got); err != nil {
				t.Fatal(err)
			}
			exp := proto.Clone(want)
			switch m := exp.(type) {
			case *discoveryv3.DiscoveryResponse:
				m.Nonce = nonce
			case *discoveryv3.DeltaDiscoveryResponse:
				m.Nonce = nonce
			}
			if !proto.Equal(got, exp) {
				t.Errorf("decoded %v, want %v", got, exp)
			}
		}
		if string(body) != before {
			t.Error("the shared body was modified")
		}
	}
}
