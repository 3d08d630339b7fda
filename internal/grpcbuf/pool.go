// Package grpcbuf is a gRPC buffer pool that hands buffers out without
// clearing them, in power-of-two size classes.
//
// gRPC's default pool clears each buffer it hands out to the buffer's whole
// capacity, and its size classes jump from 32 KiB to 1 MiB. A
// state-of-the-world EDS ACK at 1000 services restates about 47 KB of
// cluster names, so every ACK cost a 1 MiB clear where it was encoded and
// again where it was decoded: a tenth of the control plane's CPU on an
// endpoint change pushed to 2000 proxies, and more of the load process's.
// Every user of these buffers (gRPC's frame reader, the codecs) writes a
// buffer in full before it reads it, which is why gRPC uses an uncleared
// pool of its own for ALTS records.
package grpcbuf

import (
	"math/bits"
	"sync"

	"google.golang.org/grpc/mem"
)

// Buffers from 256 B to 16 MiB are pooled; larger ones are allocated and
// left to the garbage collector.
const minShift, maxShift = 8, 24

type pool struct {
	tiers [maxShift - minShift + 1]sync.Pool
}

// Pool is the shared pool.
var Pool mem.BufferPool = &pool{}

// Get returns a buffer of length n, its contents unspecified.
func (p *pool) Get(n int) *[]byte {
	if n > 1<<maxShift {
		b := make([]byte, n)
		return &b
	}
	shift := minShift
	if n > 1<<minShift {
		shift = bits.Len(uint(n - 1))
	}
	if b, ok := p.tiers[shift-minShift].Get().(*[]byte); ok {
		*b = (*b)[:n]
		return b
	}
	b := make([]byte, n, 1<<shift)
	return &b
}

// Put keeps b for reuse by size class: the largest class its capacity
// holds whole, so that any buffer Get takes from a class is long enough.
func (p *pool) Put(b *[]byte) {
	c := cap(*b)
	if c < 1<<minShift || c > 1<<(maxShift+1)-1 {
		return
	}
	p.tiers[bits.Len(uint(c))-1-minShift].Put(b)
}

// Bytes returns data as one slice, and the pooled buffer to give back to
// Pool once the slice is no longer used (nil when data was one buffer
// already, whose bytes are returned as they are).
func Bytes(data mem.BufferSlice) ([]byte, *[]byte) {
	if len(data) == 1 {
		return data[0].ReadOnlyData(), nil
	}
	buf := Pool.Get(data.Len())
	data.CopyTo(*buf)
	return *buf, buf
}

// Release gives back a buffer that Bytes returned; nil is ignored.
func Release(buf *[]byte) {
	if buf != nil {
		Pool.Put(buf)
	}
}
