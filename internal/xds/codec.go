package xds

import (
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	gproto "google.golang.org/protobuf/proto"

	"github.com/trellis-mesh/trellis/internal/grpcbuf"
)

// nonceField is the field number of nonce in both DiscoveryResponse and
// DeltaDiscoveryResponse.
const nonceField = 5

// rawResponse is a response encoded but for its nonce: the body is shared
// by every stream of a class that is sent the same thing, so a push to
// 2000 proxies encodes each response once, not 2000 times (1.6 MB each at
// 1000 services), and holds no per-proxy copy while gRPC writes it.
type rawResponse struct {
	body  []byte // shared and never modified
	nonce string
}

// codec is gRPC's proto codec, except that a rawResponse is written as its
// shared body followed by its nonce field: protobuf parsers accept fields
// in any order, so that is the same message as one encoded whole.
type codec struct{ encoding.CodecV2 }

func newCodec() codec { return codec{encoding.GetCodecV2(proto.Name)} }

func (c codec) Marshal(v any) (mem.BufferSlice, error) {
	r, ok := v.(*rawResponse)
	if !ok {
		return c.CodecV2.Marshal(v)
	}
	tail := protowire.AppendString(protowire.AppendTag(nil, nonceField, protowire.BytesType), r.nonce)
	// SliceBuffers are not pooled: gRPC's Free of them after the write
	// leaves the shared body alone.
	return mem.BufferSlice{mem.SliceBuffer(r.body), mem.SliceBuffer(tail)}, nil
}

// Unmarshal decodes ADS requests with unmarshalRequest; everything else
// as gRPC's proto codec does.
func (c codec) Unmarshal(data mem.BufferSlice, v any) error {
	switch v.(type) {
	case *discoveryv3.DiscoveryRequest, *discoveryv3.DeltaDiscoveryRequest:
	default:
		return c.CodecV2.Unmarshal(data, v)
	}
	b, buf := grpcbuf.Bytes(data)
	defer grpcbuf.Release(buf)
	return unmarshalRequest(b, v.(gproto.Message))
}
