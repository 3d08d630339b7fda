package xdsclient

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
)

const (
	minReconnectDelay = 100 * time.Millisecond
	maxReconnectDelay = 5 * time.Second
	minNACKRetryDelay = 200 * time.Millisecond
	maxNACKRetryDelay = 5 * time.Second

	// maxRecvMsgSize lifts gRPC's 4 MiB default: a mesh's full CDS or EDS set easily exceeds it and
	// Envoy has no such limit.
	maxRecvMsgSize = 128 << 20
)

// Client is an ADS (aggregated xDS, state-of-the-world) client. Create it with New, start it with Run.
type Client struct {
	cfg Config
	log *slog.Logger

	// kick wakes the stream goroutine after Subscribe or SetHealth changed something; capacity 1 so
	// neither blocks and several changes collapse into one look at the current state.
	kick    chan struct{}
	running atomic.Bool

	// Delays, fields so tests can shorten them.
	minReconnect, maxReconnect time.Duration
	minNACKRetry, maxNACKRetry time.Duration

	// caches holds, per type, what the Watcher last accepted. Only the goroutine running Run touches it.
	caches map[string]*typeCache

	mu     sync.Mutex
	subs   map[string][]string // RDS/EDS names, normalized
	status Status
	// health is the application health last given to SetHealth; nil before the first. A new value
	// replaces it, so a stream may keep the pointer it sent.
	health *healthState
}

// healthState is one application health report.
type healthState struct {
	healthy bool
	message string
}

// typeCache is the accepted state of one type, kept across streams.
type typeCache struct {
	resources map[string]proto.Message
	delivered bool // the Watcher has been given this type at least once

	// Damping of servers that resend a rejected version straight after the NACK.
	nackVersion string
	nackStreak  int
}

// New returns a client for cfg. It does nothing until Run.
func New(cfg Config) *Client {
	logger := cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}
	c := &Client{
		cfg:          cfg,
		log:          logger.With("component", "xdsclient", "xds_server", cfg.Address),
		kick:         make(chan struct{}, 1),
		minReconnect: minReconnectDelay,
		maxReconnect: maxReconnectDelay,
		minNACKRetry: minNACKRetryDelay,
		maxNACKRetry: maxNACKRetryDelay,
		caches:       make(map[string]*typeCache, len(requestOrder)),
		subs:         make(map[string][]string, 2),
		status:       Status{Address: cfg.Address, Types: make(map[string]TypeStatus, len(requestOrder))},
	}
	for _, t := range requestOrder {
		c.caches[t] = &typeCache{}
		c.status.Types[t] = TypeStatus{}
	}
	return c
}

// Run connects to the control plane and keeps an ADS stream open, reconnecting with capped
// exponential backoff, until ctx is done; it then returns ctx.Err() once its goroutines have exited.
// It returns earlier only for a configuration error. Run must not be called twice at the same time.
func (c *Client) Run(ctx context.Context) error {
	if c.cfg.Address == "" {
		return errors.New("xdsclient: no control plane address configured")
	}
	if c.cfg.Watcher == nil {
		return errors.New("xdsclient: no Watcher configured")
	}
	if !c.running.CompareAndSwap(false, true) {
		return errors.New("xdsclient: Run is already running")
	}
	defer c.running.Store(false)

	conn, err := grpc.NewClient(c.cfg.Address,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		// gRPC's own reconnect backoff (1s..120s by default) would otherwise sit under ours and make a
		// restarted control plane wait up to two minutes.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: c.minReconnect, Multiplier: 2, Jitter: 0.2, MaxDelay: c.maxReconnect},
			MinConnectTimeout: 5 * time.Second,
		}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxRecvMsgSize)),
	)
	if err != nil {
		return fmt.Errorf("xdsclient: control plane address %q: %w", c.cfg.Address, err)
	}
	defer conn.Close()

	delay := c.minReconnect
	for {
		gotResponse, err := c.runStream(ctx, conn)
		if ctx.Err() != nil {
			c.setDisconnected(nil)
			return ctx.Err()
		}
		c.setDisconnected(err)
		if gotResponse {
			delay = c.minReconnect
		}
		// Full jitter in the upper half keeps a fleet of proxies from reconnecting in lockstep.
		wait := delay/2 + rand.N(delay/2+1)
		c.log.Warn("ADS stream ended, reconnecting", "error", err, "retry_in", wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		delay = min(delay*2, c.maxReconnect)
	}
}

// Subscribe sets the resource names wanted for RouteType or EndpointType, replacing the previous set.
// A changed set is sent to the control plane promptly (after the ACK of the response being handled,
// when called from inside OnResources). It is safe from any goroutine and never blocks on the stream.
// Listeners and clusters are always subscribed to as a whole; Subscribe ignores those types.
func (c *Client) Subscribe(typeURL string, names []string) {
	if !knownType(typeURL) || isWildcard(typeURL) {
		c.log.Warn("Subscribe ignored: only RDS and EDS are subscribed by name", "type", typeURL)
		return
	}
	names = normalizeNames(names)
	c.mu.Lock()
	if slices.Equal(c.subs[typeURL], names) {
		c.mu.Unlock()
		return
	}
	c.subs[typeURL] = names
	ts := c.status.Types[typeURL]
	ts.Subscribed = names
	c.status.Types[typeURL] = ts
	c.mu.Unlock()
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// SetHealth records the application's health for the control plane, Istio's HealthInformation
// report: the stream goroutine sends it on the open stream if it differs from what that stream
// last carried, and again on every new stream after its first requests, so a reconnect or another
// control plane replica learns it. message says why the application is unhealthy and is ignored
// when healthy. It is safe from any goroutine and never blocks on the stream. Callers report
// transitions; repeating the current state sends nothing.
func (c *Client) SetHealth(healthy bool, message string) {
	if healthy {
		message = ""
	}
	h := &healthState{healthy: healthy, message: message}
	c.mu.Lock()
	changed := c.health == nil || *c.health != *h
	if changed {
		c.health = h
	}
	c.mu.Unlock()
	if !changed {
		return
	}
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

func (c *Client) currentHealth() *healthState {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.health
}

// Status returns a copy of the client's current state.
func (c *Client) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.status
	s.Types = make(map[string]TypeStatus, len(c.status.Types))
	for t, ts := range c.status.Types {
		ts.Subscribed = slices.Clone(ts.Subscribed)
		if ts.LastNACK != nil {
			n := *ts.LastNACK
			ts.LastNACK = &n
		}
		s.Types[t] = ts
	}
	return s
}

// subscribed returns the current names for a by-name type (nil for wildcard types). The slice is
// never modified after it is stored, so it may be shared.
func (c *Client) subscribed(typeURL string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.subs[typeURL]
}

func (c *Client) ackedVersion(typeURL string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.status.Types[typeURL].AckedVersion
}

func (c *Client) setConnected() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.status.Connected = true
}

func (c *Client) setDisconnected(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.status.Connected = false
	if err != nil {
		c.status.LastStreamError = err.Error()
	}
}

func (c *Client) recordACK(typeURL, version string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ts := c.status.Types[typeURL]
	ts.AckedVersion = version
	ts.LastAccepted = time.Now()
	ts.NACKed = false
	c.status.Types[typeURL] = ts
}

func (c *Client) recordNACK(typeURL, version, nonce, msg string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ts := c.status.Types[typeURL]
	ts.NACKed = true
	ts.LastNACK = &NACK{Version: version, Nonce: nonce, Message: msg, Time: time.Now()}
	c.status.Types[typeURL] = ts
}

// nackRetryDelay is how long a resent, already-rejected version waits before it is tried again.
func (c *Client) nackRetryDelay(streak int) time.Duration {
	d := c.minNACKRetry
	for i := 1; i < streak && d < c.maxNACKRetry; i++ {
		d *= 2
	}
	return min(d, c.maxNACKRetry)
}
