package xds

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

// Memory is released once after a burst, when sending has been quiet for
// a while; not during the burst, not after a small change, not twice.
func TestMemoryIsReleasedOnceAfterAQuietBurst(t *testing.T) {
	var m memoryReleaser
	var frees atomic.Int32
	var busy atomic.Bool
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); m.run(ctx, busy.Load, func() { frees.Add(1) }) }()
	t.Cleanup(func() { cancel(); <-done })

	// A burst spread over longer than the quiet period: no release while
	// it lasts.
	end := time.Now().Add(releaseQuiet + time.Second)
	for time.Now().Before(end) {
		m.add(releaseAfterBytes / 8)
		time.Sleep(releaseTick / 2)
	}
	if n := frees.Load(); n != 0 {
		t.Fatalf("memory released %d times while sending", n)
	}
	// Responses awaiting ACKs: the burst is not over, however quiet.
	busy.Store(true)
	time.Sleep(releaseQuiet + 3*releaseTick)
	if n := frees.Load(); n != 0 {
		t.Fatalf("memory released %d times while responses awaited ACKs", n)
	}
	busy.Store(false)
	deadline := time.Now().Add(releaseQuiet + 10*releaseTick)
	for frees.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(releaseTick / 2)
	}
	if n := frees.Load(); n != 1 {
		t.Fatalf("memory released %d times after the burst went quiet, want 1", n)
	}
	// A small change afterwards does not release again.
	m.add(1 << 10)
	time.Sleep(releaseQuiet + 3*releaseTick)
	if n := frees.Load(); n != 1 {
		t.Fatalf("memory released %d times in all, want 1 (a small change must not release)", n)
	}
}
