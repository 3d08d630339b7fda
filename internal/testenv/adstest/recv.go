package adstest

import (
	"context"
	"testing"
)

// recvBuffer is how many responses may arrive before the test reads them;
// the server never waits on the test, as it would not on a real proxy.
const recvBuffer = 16

// receiver turns a stream's blocking Recv into channels a test can select
// on with a deadline.
type receiver[R any] struct {
	resps chan R
	errc  chan error // the error that ended the stream; written once
}

// startReceiver runs recv in a goroutine until the stream fails, and
// registers a cleanup that cancels the stream and waits for that goroutine
// to end, so no test leaves one behind. The goroutine also stops when ctx
// ends, so a test that stops reading never strands it on a full buffer.
func startReceiver[R any](t testing.TB, ctx context.Context, cancel context.CancelFunc, recv func() (R, error)) *receiver[R] {
	rc := &receiver[R]{resps: make(chan R, recvBuffer), errc: make(chan error, 1)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			r, err := recv()
			if err != nil {
				rc.errc <- err
				return
			}
			select {
			case rc.resps <- r:
			case <-ctx.Done():
				return
			}
		}
	}()
	t.Cleanup(func() {
		cancel() // makes a blocked Recv return
		<-done
	})
	return rc
}
