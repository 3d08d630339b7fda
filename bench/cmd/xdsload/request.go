package main

import (
	"sync"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	protobuf "google.golang.org/protobuf/proto"
)

// resourceNamesField is DiscoveryRequest.resource_names.
const resourceNamesField = 3

// sotwRequest is a state-of-the-world request whose resource_names are sent
// as an encoding made once per distinct list. Envoy restates its whole EDS
// subscription in every ACK, about 47 KB at 1000 services; encoding that
// anew for each of 2000 clients on every endpoint change was two fifths of
// the load process's CPU, CPU the control plane it measures shares. The
// bytes on the wire are what proto.Marshal of the whole request gives, but
// for field order, which protobuf leaves free.
type sotwRequest struct {
	head  *discoveryv3.DiscoveryRequest // without ResourceNames
	names []byte                        // resource_names fields
}

func (r *sotwRequest) marshal() (mem.BufferSlice, error) {
	head, err := protobuf.Marshal(r.head)
	if err != nil {
		return nil, err
	}
	return mem.BufferSlice{mem.SliceBuffer(head), mem.SliceBuffer(r.names)}, nil
}

// namesMemo is the last list a client encoded for one type.
type namesMemo struct {
	names []string
	wire  []byte
}

// encodedNames returns names as resource_names fields. A client asks again
// with the very slice it asked with before until its subscription changes,
// so the slice is the memo's key; the encodings are shared across clients.
func (c *client) encodedNames(t int, names []string) []byte {
	m := &c.namesWire[t]
	if len(names) == len(m.names) && (len(names) == 0 || &names[0] == &m.names[0]) {
		return m.wire
	}
	var b []byte
	for _, n := range names {
		b = protowire.AppendString(protowire.AppendTag(b, resourceNamesField, protowire.BytesType), n)
	}
	*m = namesMemo{names: names, wire: internWire(b)}
	return m.wire
}

var wires = struct {
	sync.Mutex
	m map[string][]byte
}{m: map[string][]byte{}}

// internWire keeps one copy of each distinct encoding: the synthetic mesh
// has a few lists, asked for by thousands of clients.
func internWire(b []byte) []byte {
	wires.Lock()
	defer wires.Unlock()
	if w, ok := wires.m[string(b)]; ok {
		return w
	}
	wires.m[string(b)] = b
	return b
}
