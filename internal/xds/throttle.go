package xds

import (
	"context"
	"sync"
	"time"
)

// Push throttle defaults: how many responses may be in flight (built and
// not yet ACKed) at once, and how long one counts without its ACK.
// 100 is istiod's PILOT_PUSH_THROTTLE default; at 2000 proxies connecting
// at once, 32 made convergence wait on ACK round trips (24 s against 16 s,
// bench/RESULTS.md) for no lower peak memory.
const (
	DefaultMaxInFlight = 100
	inFlightHold       = 2 * time.Second
	// DefaultUnthrottledBytes is the size under which a response skips the
	// throttle. An endpoint change is one load assignment (hundreds of
	// bytes) to each of thousands of proxies; holding those a hundred at a time
	// until each ACK made one change take a second at 2000 proxies, while
	// all of them together weigh less than one full config.
	DefaultUnthrottledBytes = 16 << 10
)

// throttle bounds the responses in flight across all streams, as istiod's
// PILOT_PUSH_THROTTLE does. Without it, 2000 proxies connecting at once
// each get their whole config (megabytes at 1000 services) queued on their
// connection at the same time: gigabytes, all resident until slow readers
// drain them. A stream takes a slot before it builds a response; the
// proxy's ACK or NACK of that type gives it back (or inFlightHold passes
// after the response was written: a proxy that never answers must not
// wedge others).
type throttle struct {
	slots chan struct{}
	small int // responses of at most this many bytes take no slot

	mu   sync.Mutex
	held map[slotKey]*time.Timer
}

// slotKey is one type on one stream: at most one slot each.
type slotKey struct {
	stream streamKey
	typ    int
}

func newThrottle(maxInFlight, unthrottledBytes int) *throttle {
	if unthrottledBytes == 0 {
		unthrottledBytes = DefaultUnthrottledBytes
	}
	return &throttle{slots: make(chan struct{}, maxInFlight), small: unthrottledBytes, held: map[slotKey]*time.Timer{}}
}

// acquire takes a slot for key's response of size bytes, or keeps the one
// key already holds (a second response of a type before the first's ACK).
// A small response takes none. False if ctx ended.
func (c *throttle) acquire(ctx context.Context, key slotKey, size int) bool {
	if size <= c.small {
		return true
	}
	c.mu.Lock()
	_, have := c.held[key]
	c.mu.Unlock()
	if have {
		return true
	}
	select {
	case c.slots <- struct{}{}:
	case <-ctx.Done():
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, have := c.held[key]; have { // taken meanwhile (cannot happen: one goroutine per stream sends)
		<-c.slots
		return true
	}
	c.held[key] = nil // the hold starts once the response is sent (see sent)
	return true
}

// sent starts the hold of key's slot: its response is written. Until then
// the slot is held however long the send takes, so that slow readers (a
// starved machine) cannot let more responses queue up in memory than the
// throttle allows.
func (c *throttle) sent(key slotKey) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t, ok := c.held[key]; ok {
		if t != nil {
			t.Stop()
		}
		c.held[key] = time.AfterFunc(inFlightHold, func() { c.release(key) })
	}
}

// busy reports whether any response holds a slot (awaits its ACK).
func (c *throttle) busy() bool { return len(c.slots) > 0 }

// release gives back key's slot, if it holds one: its proxy answered.
func (c *throttle) release(key slotKey) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t, ok := c.held[key]; ok {
		if t != nil {
			t.Stop()
		}
		delete(c.held, key)
		<-c.slots
	}
}

// releaseStream gives back every slot a closed stream holds.
func (c *throttle) releaseStream(stream streamKey) {
	for t := range numTypes {
		c.release(slotKey{stream, t})
	}
}
