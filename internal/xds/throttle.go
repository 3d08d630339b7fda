package xds

import (
	"sync"
	"time"

	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
)

// Push throttle defaults: how many responses may be in flight (built and
// not yet ACKed) at once, and how long one counts without its ACK.
const (
	DefaultMaxInFlight = 32
	inFlightHold       = 2 * time.Second
)

// throttledCache bounds the responses in flight across all streams, as
// istiod's PILOT_PUSH_THROTTLE does. Without it, 2000 proxies connecting at
// once each get their whole config (megabytes at 1000 services) encoded and
// queued on their connection at the same time: gigabytes, all resident until
// slow readers drain them. A response takes a slot before the stream builds
// and encodes it; the proxy's ACK or NACK of that type gives it back (or
// inFlightHold passes: a proxy that never answers must not wedge others).
//
// It wraps the snapshot cache's watches: the cache answers into a private
// channel, and the answer is handed on to the stream once a slot is free.
type throttledCache struct {
	cachev3.SnapshotCache
	slots chan struct{}

	mu   sync.Mutex
	held map[throttleKey]*time.Timer
	wire map[string]wires // node → wire indexes of its latest snapshots
}

type throttleKey struct{ node, typeURL string }

func newThrottledCache(c cachev3.SnapshotCache, maxInFlight int) *throttledCache {
	return &throttledCache{SnapshotCache: c, slots: make(chan struct{}, maxInFlight), held: map[throttleKey]*time.Timer{}, wire: map[string]wires{}}
}

func (c *throttledCache) CreateWatch(req *cachev3.Request, sub cachev3.Subscription, out chan cachev3.Response) (func(), error) {
	in := make(chan cachev3.Response, 1)
	cancel, err := c.SnapshotCache.CreateWatch(req, sub, in)
	if err != nil {
		return cancel, err
	}
	node := req.GetNode().GetId()
	wire := func(r cachev3.Response) cachev3.Response { return sotwWire(c.wireOf(node), r) }
	return forward(c, throttleKey{node, req.GetTypeUrl()}, in, out, cancel, wire), nil
}

func (c *throttledCache) CreateDeltaWatch(req *cachev3.DeltaRequest, sub cachev3.Subscription, out chan cachev3.DeltaResponse) (func(), error) {
	in := make(chan cachev3.DeltaResponse, 1)
	cancel, err := c.SnapshotCache.CreateDeltaWatch(req, sub, in)
	if err != nil {
		return cancel, err
	}
	node := req.GetNode().GetId()
	wire := func(r cachev3.DeltaResponse) cachev3.DeltaResponse { return deltaWire(c.wireOf(node), r) }
	return forward(c, throttleKey{node, req.GetTypeUrl()}, in, out, cancel, wire), nil
}

// forward hands the watch's one answer on once a slot is free, in its wire
// form (see sotwWire). Watches are
// one-shot: the server opens a new one for the next answer. The returned
// cancel stops the forwarder as well as the watch.
func forward[R any](c *throttledCache, key throttleKey, in <-chan R, out chan<- R, cancel func(), wire func(R) R) func() {
	stop := make(chan struct{})
	go func() {
		var r R
		select {
		case r = <-in:
		case <-stop:
			return
		}
		if !c.acquire(key, stop) {
			return
		}
		r = wire(r)
		select {
		case out <- r:
		case <-stop:
			c.release(key)
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			close(stop)
			if cancel != nil {
				cancel()
			}
		})
	}
}

// acquire takes a slot for key, or keeps the one key already holds (a
// second response of a type before the first's ACK). False if stop closed.
func (c *throttledCache) acquire(key throttleKey, stop <-chan struct{}) bool {
	c.mu.Lock()
	_, have := c.held[key]
	c.mu.Unlock()
	if have {
		return true
	}
	select {
	case c.slots <- struct{}{}:
	case <-stop:
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, have := c.held[key]; have { // taken meanwhile by another answer of key
		<-c.slots
		return true
	}
	c.held[key] = time.AfterFunc(inFlightHold, func() { c.release(key) })
	return true
}

// release gives back key's slot, if it holds one: its proxy answered.
func (c *throttledCache) release(key throttleKey) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t, ok := c.held[key]; ok {
		t.Stop()
		delete(c.held, key)
		<-c.slots
	}
}
