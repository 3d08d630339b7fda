package xds

import (
	"bytes"
	"errors"
	"hash/maphash"
	"sync"
	"unicode/utf8"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// resourceNamesField is resource_names in DiscoveryRequest and
// resource_names_subscribe in DeltaDiscoveryRequest.
const resourceNamesField = 3

// A state-of-the-world client restates its whole subscription in every
// request, ACKs included: at 1000 services each EDS ACK carries 1000
// cluster names, and decoding them (a string each) was a third of the
// control plane's CPU on an endpoint change pushed to 2000 proxies; a new
// delta client subscribes to the same 1000. Proxies of a class ask for the
// same names in the same order, so the names are decoded once per distinct
// encoding and the decoded slice is shared by every request that carries
// those bytes. Callers must not modify a request's ResourceNames or
// ResourceNamesSubscribe.

// namesCacheBytes bounds the encodings remembered; a list smaller than
// namesCacheMin is cheaper to decode than to look up.
const (
	namesCacheBytes = 8 << 20
	namesCacheMin   = 512
)

type cachedNames struct {
	wire  []byte
	names []string
}

var namesCache = struct {
	mu    sync.Mutex
	seed  maphash.Seed
	m     map[uint64]*cachedNames
	bytes int
}{seed: maphash.MakeSeed(), m: map[uint64]*cachedNames{}}

// unmarshalRequest decodes a DiscoveryRequest or DeltaDiscoveryRequest as
// proto.Unmarshal does, with field 3's names shared as described above.
func unmarshalRequest(b []byte, req proto.Message) error {
	start, end, ok := namesSpan(b)
	if !ok || end-start < namesCacheMin {
		return proto.Unmarshal(b, req)
	}
	proto.Reset(req)
	merge := proto.UnmarshalOptions{Merge: true}
	if err := merge.Unmarshal(b[:start], req); err != nil {
		return err
	}
	if err := merge.Unmarshal(b[end:], req); err != nil {
		return err
	}
	names, err := decodeNames(b[start:end])
	if err != nil {
		return err
	}
	switch r := req.(type) {
	case *discoveryv3.DiscoveryRequest:
		r.ResourceNames = names
	case *discoveryv3.DeltaDiscoveryRequest:
		r.ResourceNamesSubscribe = names
	default:
		return proto.Unmarshal(b, req)
	}
	return nil
}

// namesSpan finds the one contiguous run of resource_names fields in b;
// not ok when there is none, when they are interleaved with other fields
// (legal, but no client does it: proto.Unmarshal handles that case), or
// when b is malformed (proto.Unmarshal then reports it).
func namesSpan(b []byte) (start, end int, ok bool) {
	start, end = -1, -1
	for off := 0; off < len(b); {
		num, typ, size := nextField(b[off:])
		if size < 0 {
			return 0, 0, false
		}
		if num == resourceNamesField {
			if typ != protowire.BytesType {
				return 0, 0, false
			}
			switch {
			case start < 0:
				start = off
			case end != off:
				return 0, 0, false
			}
			end = off + size
		}
		off += size
	}
	return start, end, start >= 0
}

// namesTag is resource_names' tag byte: field 3, length-delimited.
const namesTag = resourceNamesField<<3 | byte(protowire.BytesType)

// nextField returns the number, type and encoded size of b's first field;
// a negative size if it is malformed. A name shorter than 128 bytes,
// nearly every field of a large request, is read without the general
// decoder.
func nextField(b []byte) (protowire.Number, protowire.Type, int) {
	if len(b) >= 2 && b[0] == namesTag && b[1] < 0x80 {
		if size := 2 + int(b[1]); size <= len(b) {
			return resourceNamesField, protowire.BytesType, size
		}
		return 0, 0, -1
	}
	num, typ, n := protowire.ConsumeTag(b)
	if n < 0 {
		return 0, 0, -1
	}
	m := protowire.ConsumeFieldValue(num, typ, b[n:])
	if m < 0 {
		return 0, 0, -1
	}
	return num, typ, n + m
}

// decodeNames returns the names encoded in span (resource_names fields
// only), shared with every earlier request that carried the same bytes.
func decodeNames(span []byte) ([]string, error) {
	h := maphash.Bytes(namesCache.seed, span)
	namesCache.mu.Lock()
	c := namesCache.m[h]
	namesCache.mu.Unlock()
	if c != nil && bytes.Equal(c.wire, span) {
		return c.names, nil
	}
	var names []string
	for b := span; len(b) > 0; {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || num != resourceNamesField || typ != protowire.BytesType {
			return nil, errors.New("resource_names: malformed field")
		}
		v, m := protowire.ConsumeBytes(b[n:])
		if m < 0 {
			return nil, protowire.ParseError(m)
		}
		if !utf8.Valid(v) {
			return nil, errors.New("resource_names: invalid UTF-8")
		}
		names = append(names, string(v))
		b = b[n+m:]
	}
	namesCache.mu.Lock()
	defer namesCache.mu.Unlock()
	for namesCache.bytes+len(span) > namesCacheBytes && len(namesCache.m) > 0 {
		for k, old := range namesCache.m { // any one: lists churn only as subscriptions do
			namesCache.bytes -= len(old.wire)
			delete(namesCache.m, k)
			break
		}
	}
	if len(span) <= namesCacheBytes {
		if old := namesCache.m[h]; old != nil {
			namesCache.bytes -= len(old.wire)
		}
		namesCache.m[h] = &cachedNames{wire: bytes.Clone(span), names: names}
		namesCache.bytes += len(span)
	}
	return names, nil
}
