package grpcbuf

import (
	"bytes"
	"testing"

	"google.golang.org/grpc/mem"
)

func TestGetReturnsTheLengthAskedWithinItsSizeClass(t *testing.T) {
	for _, n := range []int{0, 1, 255, 256, 257, 4096, 32 << 10, 47_000, 1 << 20, 1<<20 + 1, 1 << 24, 1<<24 + 1} {
		b := Pool.Get(n)
		if len(*b) != n {
			t.Errorf("Get(%d): len %d", n, len(*b))
		}
		if c := cap(*b); c < n || (n > 256 && n <= 1<<24 && c >= 2*n) {
			t.Errorf("Get(%d): cap %d, want the power of two at or above %d", n, c, n)
		}
		Pool.Put(b)
	}
}

func TestBuffersPutBackAreLongEnoughForTheirClass(t *testing.T) {
	// A buffer of any capacity goes back under the class it holds whole,
	// so a later Get of that class's largest length fits.
	for _, c := range []int{300, 4095, 4096, 5000, 1<<20 - 1, 1<<25 - 1} {
		b := make([]byte, 10, c)
		Pool.Put(&b)
		for _, n := range []int{c / 2, c} {
			if n > 1<<24 {
				continue
			}
			got := Pool.Get(n)
			if len(*got) != n || cap(*got) < n {
				t.Fatalf("after Put(cap %d): Get(%d) has len %d cap %d", c, n, len(*got), cap(*got))
			}
		}
	}
}

func TestBytesJoinsBuffersAndSharesASingleOne(t *testing.T) {
	one := mem.BufferSlice{mem.SliceBuffer([]byte("single"))}
	b, buf := Bytes(one)
	if string(b) != "single" || buf != nil {
		t.Fatalf("one buffer: got %q, pooled %v", b, buf != nil)
	}
	parts := mem.BufferSlice{mem.SliceBuffer([]byte("resource ")), mem.SliceBuffer([]byte("names"))}
	b, buf = Bytes(parts)
	if !bytes.Equal(b, []byte("resource names")) || buf == nil {
		t.Fatalf("two buffers: got %q, pooled %v", b, buf != nil)
	}
	Release(buf)
	Release(nil)
}
