package main

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"unicode/utf8"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	protobuf "google.golang.org/protobuf/proto"

	"github.com/trellis-mesh/trellis/internal/grpcbuf"
)

// response is what a simulated client keeps of a DiscoveryResponse or
// DeltaDiscoveryResponse. loadCodec fills it straight from the wire: a
// proto.Unmarshal allocates and copies every resource's Any.value (1.6 MB
// per client at 1000 services) only for the load to count its length, and
// that copying and the GC after it were a third of the load process's CPU,
// CPU the control plane it measures shares.
type response struct {
	// delta selects DeltaDiscoveryResponse; pending, when set, says which
	// endpoint change to look for. Both are set before RecvMsg.
	delta   bool
	pending func() *change

	typeURL string
	// version is version_info (SotW) or system_version_info (delta).
	version, nonce string
	// resources counts the resources; size sums their encoded Any.value.
	resources int
	size      int64
	// names are the delta resources' names, in order.
	names   []string
	removed []string
	// edsNames are the names of the EDS clusters (CDS), in order; rdsNames
	// the RDS route names the listeners' HCMs name (LDS), each once.
	edsNames, rdsNames []string
	// seen is the pending change when an endpoint resource carries it.
	seen *change
}

// Field numbers of envoy.service.discovery.v3 and google.protobuf.Any, as in
// go-control-plane's discovery.pb.go and anypb.
const (
	respVersion  = 1 // DiscoveryResponse.version_info, DeltaDiscoveryResponse.system_version_info
	respResource = 2 // resources: Any (SotW) or Resource (delta)
	respTypeURL  = 4
	respNonce    = 5
	respRemoved  = 6 // DeltaDiscoveryResponse.removed_resources

	resVersion = 1 // Resource.version
	resAny     = 2 // Resource.resource
	resName    = 3 // Resource.name

	anyTypeURL = 1
	anyValue   = 2
)

var (
	errTruncated = errors.New("truncated or malformed field")
	errNotUTF8   = errors.New("string field is not UTF-8")
)

// loadCodec is the ADS streams' gRPC codec: requests and any message other
// than *response go through gRPC's proto codec.
type loadCodec struct{ proto encoding.CodecV2 }

// adsCodec is stateless; every stream shares it.
var adsCodec = newLoadCodec()

func newLoadCodec() loadCodec { return loadCodec{proto: encoding.GetCodecV2(proto.Name)} }

func (c loadCodec) Name() string { return proto.Name }

func (c loadCodec) Marshal(v any) (mem.BufferSlice, error) {
	if r, ok := v.(*sotwRequest); ok {
		return r.marshal()
	}
	return c.proto.Marshal(v)
}

func (c loadCodec) Unmarshal(data mem.BufferSlice, v any) error {
	r, ok := v.(*response)
	if !ok {
		return c.proto.Unmarshal(data, v)
	}
	b, buf := grpcbuf.Bytes(data)
	defer grpcbuf.Release(buf)
	return r.decode(b)
}

// decode fills r from an encoded response. It keeps no slice of b: every
// string it keeps is a copy. It fails where proto.Unmarshal would on the
// response, its resources and their Anys; a resource's own encoding is read
// as leniently as before (an undecodable listener names no routes).
func (r *response) decode(b []byte) error {
	pending := r.pending
	*r = response{delta: r.delta, pending: pending}
	// type_url (4) follows the resources (2) on the wire, and what to read
	// of a resource depends on it: a first pass finds it and checks the
	// framing, the second reads the resources.
	err := walk(b, func(num protowire.Number, v []byte) error {
		switch num {
		case respVersion:
			return str(&r.version, v)
		case respTypeURL:
			return str(&r.typeURL, v)
		case respNonce:
			return str(&r.nonce, v)
		case respRemoved:
			if !r.delta {
				return nil
			}
			var s string
			if err := str(&s, v); err != nil {
				return err
			}
			r.removed = append(r.removed, s)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("decoding response: %w", err)
	}
	t := typeIdx(r.typeURL)
	var ch *change
	if pending != nil && t >= 0 && typeOrder[t] == resourcev3.EndpointType {
		ch = pending()
	}
	i := 0
	err = walk(b, func(num protowire.Number, v []byte) error {
		if num != respResource {
			return nil
		}
		i++
		var value, anyType []byte
		if r.delta {
			var name string
			if err := walk(v, func(num protowire.Number, v []byte) error {
				switch num {
				case resName:
					return str(&name, v)
				case resVersion:
					if !utf8.Valid(v) {
						return errNotUTF8
					}
				case resAny:
					return anyFields(v, &anyType, &value)
				}
				return nil
			}); err != nil {
				return fmt.Errorf("resources[%d]: %w", i-1, err)
			}
			r.names = append(r.names, name)
		} else if err := anyFields(v, &anyType, &value); err != nil {
			return fmt.Errorf("resources[%d]: %w", i-1, err)
		}
		r.resources++
		r.size += int64(len(value))
		if t < 0 {
			return nil
		}
		switch typeOrder[t] {
		case resourcev3.ClusterType:
			if name, eds := edsCluster(value); eds {
				r.edsNames = append(r.edsNames, name)
			}
		case resourcev3.ListenerType:
			r.rdsNames = appendRDSNames(r.rdsNames, anyType, value)
		case resourcev3.EndpointType:
			// The cluster name and the new address both appear verbatim in
			// the encoded assignment; no need to decode it.
			if ch != nil && r.seen == nil && bytes.Contains(value, ch.addr) && bytes.Contains(value, []byte(ch.cluster)) {
				r.seen = ch
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("decoding response: %w", err)
	}
	return nil
}

// walk calls f with each length-delimited field of message b, and skips the
// others. A field of another wire type, even with a known number, is an
// unknown field to proto.Unmarshal too.
func walk(b []byte, f func(num protowire.Number, v []byte) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return errTruncated
		}
		b = b[n:]
		if typ != protowire.BytesType {
			m := protowire.ConsumeFieldValue(num, typ, b)
			if m < 0 {
				return errTruncated
			}
			b = b[m:]
			continue
		}
		v, m := protowire.ConsumeBytes(b)
		if m < 0 {
			return errTruncated
		}
		b = b[m:]
		if err := f(num, v); err != nil {
			return err
		}
	}
	return nil
}

// str sets *s to a copy of v, a proto3 string field: valid UTF-8.
func str(s *string, v []byte) error {
	if !utf8.Valid(v) {
		return errNotUTF8
	}
	*s = intern(v)
	return nil
}

// interned holds one copy of each string the clients decode: 2000
// simulated proxies hold the same 2000 resource names, and a copy per
// client was millions of strings for the load process to allocate and its
// GC to scan, on the CPUs the control plane is measured on. The synthetic
// mesh bounds what it holds.
var interned = struct {
	sync.RWMutex
	m map[string]string
}{m: map[string]string{}}

func intern(v []byte) string {
	interned.RLock()
	s, ok := interned.m[string(v)]
	interned.RUnlock()
	if ok {
		return s
	}
	interned.Lock()
	defer interned.Unlock()
	if s, ok := interned.m[string(v)]; ok {
		return s
	}
	s = string(v)
	interned.m[s] = s
	return s
}

// anyFields reads an Any's type_url and value, overwriting only the fields
// present, as proto merges a repeated message field.
func anyFields(b []byte, typeURL, value *[]byte) error {
	return walk(b, func(num protowire.Number, v []byte) error {
		switch num {
		case anyTypeURL:
			if !utf8.Valid(v) {
				return errNotUTF8
			}
			*typeURL = v
		case anyValue:
			*value = v
		}
		return nil
	})
}

// appendRDSNames appends to names the RDS route names a listener's HCMs
// name, each once. There are few listeners, so they are decoded with proto.
func appendRDSNames(names []string, anyType, value []byte) []string {
	// As anypb.UnmarshalTo: the type must be a Listener.
	const listener = "envoy.config.listener.v3.Listener"
	if s := string(anyType); s != listener && !strings.HasSuffix(s, "/"+listener) {
		return names
	}
	var l listenerv3.Listener
	if protobuf.Unmarshal(value, &l) != nil {
		return names
	}
	for _, fc := range l.GetFilterChains() {
		for _, f := range fc.GetFilters() {
			var h hcmv3.HttpConnectionManager
			if f.GetTypedConfig().MessageIs(&h) && f.GetTypedConfig().UnmarshalTo(&h) == nil {
				if n := h.GetRds().GetRouteConfigName(); n != "" && !slices.Contains(names, n) {
					names = append(names, n)
				}
			}
		}
	}
	return names
}
