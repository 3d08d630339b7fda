package hcm

import (
	"errors"
	"io"
	"sync"
	"sync/atomic"
)

// errAttemptOver ends the reads of an upstream try that a retry replaced.
var errAttemptOver = errors.New("request body: this upstream attempt was abandoned")

// replayBody is the downstream request body as the router sees it: it counts bytes and, once
// recording is on (a retry policy or a mirror needs it), keeps them up to a limit so that a later
// try can send them again, then go on with the rest of the stream. Envoy buffers the same way
// (per_request_buffer_limit_bytes) and gives up retrying once a body outgrows the buffer.
//
// Each try reads through its own attempt; starting a new one abandons the previous, whose transport
// may still be reading from another goroutine: what it reads is kept for the next try.
type replayBody struct {
	src      io.ReadCloser
	received atomic.Int64

	readMu   sync.Mutex // held by the one try reading from src
	mu       sync.Mutex // guards what follows
	limit    int64      // 0: not recording
	buf      []byte
	overflow bool  // buf no longer holds everything read
	read     int64 // bytes read from src
	srcErr   error // src's terminal error (io.EOF at the end)
	gen      int

	// head is what a filter peeked at (Peek), served again before src; headErr is src's error
	// that ended the peek, returned once head is served.
	head    []byte
	headOff int
	headErr error
}

func newReplayBody(src io.ReadCloser) *replayBody { return &replayBody{src: src} }

// Received is how many body bytes came from downstream so far.
func (b *replayBody) Received() int64 { return b.received.Load() }

// Record starts keeping the body, up to limit bytes, for replays. Call it before the first try.
func (b *replayBody) Record(limit int64) {
	b.mu.Lock()
	if b.read == 0 && limit > b.limit {
		b.limit = limit
	}
	b.mu.Unlock()
}

func (b *replayBody) recording() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.limit > 0
}

// Replayable reports whether every byte read so far is still kept.
func (b *replayBody) Replayable() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.limit > 0 && !b.overflow
}

// Read serves the first try directly; the router's per-try bodies go through Attempt.
func (b *replayBody) Read(p []byte) (int, error) { return b.readSrc(p) }

// readSrc reads from downstream, the peeked bytes first, counting what is new.
func (b *replayBody) readSrc(p []byte) (int, error) {
	if b.headOff < len(b.head) {
		n := copy(p, b.head[b.headOff:])
		b.headOff += n
		return n, nil
	}
	if b.headErr != nil {
		return 0, b.headErr
	}
	n, err := b.src.Read(p)
	b.received.Add(int64(n))
	return n, err
}

// Peek reads ahead up to max bytes for a filter (filters.RequestBody); the router reads them again.
// It reads one byte past max when it can, to tell a body of exactly max bytes from a longer one.
// Filters run before the router, so nothing else reads meanwhile.
func (b *replayBody) Peek(max int64) ([]byte, bool, error) {
	b.readMu.Lock()
	defer b.readMu.Unlock()
	var buf [4096]byte
	for int64(len(b.head)) <= max && b.headErr == nil {
		want := min(int64(len(buf)), max+1-int64(len(b.head)))
		n, err := b.src.Read(buf[:want])
		b.received.Add(int64(n))
		b.head = append(b.head, buf[:n]...)
		if err != nil {
			b.headErr = err
		}
	}
	whole := b.headErr == io.EOF && int64(len(b.head)) <= max
	var err error
	if b.headErr != io.EOF {
		err = b.headErr
	}
	return b.head[:min(int64(len(b.head)), max)], whole, err
}

// Close does nothing: the server owns the downstream body.
func (b *replayBody) Close() error { return nil }

// Attempt returns the body for a new try, abandoning the previous one.
func (b *replayBody) Attempt() io.ReadCloser {
	b.mu.Lock()
	b.gen++
	a := &attemptBody{b: b, gen: b.gen}
	b.mu.Unlock()
	return a
}

// Snapshot returns what has been kept so far and whether it is the whole body (for mirrors).
func (b *replayBody) Snapshot() ([]byte, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf, !b.overflow && b.srcErr == io.EOF
}

type attemptBody struct {
	b   *replayBody
	gen int
	off int64
}

func (a *attemptBody) Read(p []byte) (int, error) {
	b := a.b
	for {
		b.mu.Lock()
		switch {
		case a.gen != b.gen:
			b.mu.Unlock()
			return 0, errAttemptOver
		case a.off < int64(len(b.buf)):
			n := copy(p, b.buf[a.off:])
			a.off += int64(n)
			b.mu.Unlock()
			return n, nil
		case a.off != b.read:
			b.mu.Unlock()
			return 0, errAttemptOver // the kept bytes overflowed: this body cannot be replayed
		case b.srcErr != nil:
			err := b.srcErr
			b.mu.Unlock()
			return 0, err
		}
		b.mu.Unlock()

		// One reader at a time takes from downstream, so bytes reach buf in order; state stays
		// readable meanwhile (a retry decision never waits on a client that is not sending).
		b.readMu.Lock()
		b.mu.Lock()
		if a.off != b.read || b.srcErr != nil || a.gen != b.gen {
			// Another try read while this one waited: serve from what it kept.
			b.mu.Unlock()
			b.readMu.Unlock()
			continue
		}
		b.mu.Unlock()
		n, err := b.readSrc(p)
		b.mu.Lock()
		b.read += int64(n)
		a.off += int64(n)
		if b.limit > 0 && !b.overflow {
			if int64(len(b.buf)+n) > b.limit {
				b.overflow = true
				b.buf = nil
			} else {
				b.buf = append(b.buf, p[:n]...)
			}
		}
		if err != nil {
			b.srcErr = err
		}
		b.mu.Unlock()
		b.readMu.Unlock()
		return n, err
	}
}

func (a *attemptBody) Close() error { return nil }
