package xds

import (
	"context"
	"runtime/debug"
	"sync/atomic"
	"time"
)

// After a push storm (thousands of proxies connecting, a change of every
// class) the Go runtime keeps the heap it grew to: with GOGC=100 about
// twice the live data at the peak, and with no allocation at rest no GC
// runs to shrink it. Once a burst of at least releaseAfterBytes has gone
// out and nothing was sent for releaseQuiet, the heap is collected and
// its free pages returned to the OS, so the resident size settles near
// the live data instead of the peak.
const (
	releaseAfterBytes = 64 << 20
	releaseQuiet      = 2 * time.Second
	releaseTick       = 500 * time.Millisecond
)

// memoryReleaser counts the bytes sent since memory was last released.
type memoryReleaser struct {
	sent atomic.Int64
}

func (m *memoryReleaser) add(n int) { m.sent.Add(int64(n)) }

// run releases memory after each quiet spell that follows a burst, until
// ctx ends; free is debug.FreeOSMemory but for tests. busy reports
// responses still awaiting their ACKs: a pause in sending while proxies
// digest their config is not the end of the burst.
func (m *memoryReleaser) run(ctx context.Context, busy func() bool, free func()) {
	t := time.NewTicker(releaseTick)
	defer t.Stop()
	last, quietSince := m.sent.Load(), time.Now()
	released := last
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			cur := m.sent.Load()
			if cur != last {
				last, quietSince = cur, now
				continue
			}
			if cur-released >= releaseAfterBytes && now.Sub(quietSince) >= releaseQuiet && !busy() {
				free()
				released = cur
			}
		}
	}
}

func freeOSMemory() { debug.FreeOSMemory() }
