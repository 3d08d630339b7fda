package xds

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"

	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
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
	// waiting: per node, the answers of each type not yet handed on (in the
	// watch's channel or read from it), so a later type waits for an
	// earlier one: ADS order, as the snapshot cache answers.
	waiting map[string]map[string]*pendingAnswer
}

// pendingAnswer is one watch's answer on its way to the stream.
type pendingAnswer struct{ waiting func() bool }

type throttleKey struct{ node, typeURL string }

func newThrottledCache(c cachev3.SnapshotCache, maxInFlight int) *throttledCache {
	return &throttledCache{SnapshotCache: c, slots: make(chan struct{}, maxInFlight), held: map[throttleKey]*time.Timer{},
		wire: map[string]wires{}, waiting: map[string]map[string]*pendingAnswer{}}
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
	var read atomic.Bool // an answer was read from in and is not handed on yet
	pa := &pendingAnswer{waiting: func() bool { return read.Load() || len(in) > 0 }}
	c.track(key, pa)
	go func() {
		defer c.untrack(key, pa)
		var r R
		select {
		case r = <-in:
			read.Store(true)
		case <-stop:
			return
		}
		defer read.Store(false)
		if !c.inOrder(key, stop) || !c.acquire(key, stop) {
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

// adsOrder is the order in which an ADS server answers the types, so a proxy
// learns clusters before the listeners and routes that name them.
var adsOrder = []string{resourcev3.SecretType, resourcev3.ClusterType, resourcev3.EndpointType, resourcev3.ListenerType, resourcev3.RouteType}

func (c *throttledCache) track(key throttleKey, pa *pendingAnswer) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.waiting[key.node] == nil {
		c.waiting[key.node] = map[string]*pendingAnswer{}
	}
	c.waiting[key.node][key.typeURL] = pa
}

// untrack forgets pa, unless a newer watch of the same type replaced it.
func (c *throttledCache) untrack(key throttleKey, pa *pendingAnswer) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.waiting[key.node][key.typeURL] == pa {
		delete(c.waiting[key.node], key.typeURL)
	}
	if len(c.waiting[key.node]) == 0 {
		delete(c.waiting, key.node)
	}
}

// inOrder waits until no earlier type of key's node has an answer waiting,
// before key takes a slot (so an earlier type is never blocked by a later
// one holding slots). False if stop closed.
func (c *throttledCache) inOrder(key throttleKey, stop <-chan struct{}) bool {
	rank := slices.Index(adsOrder, key.typeURL)
	if rank <= 0 {
		return true
	}
	for {
		c.mu.Lock()
		blocked := false
		for _, t := range adsOrder[:rank] {
			if p := c.waiting[key.node][t]; p != nil && p.waiting() {
				blocked = true
				break
			}
		}
		c.mu.Unlock()
		if !blocked {
			return true
		}
		select {
		case <-stop:
			return false
		case <-time.After(time.Millisecond):
		}
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
