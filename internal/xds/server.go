package xds

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"github.com/trellis-mesh/trellis/internal/model"
)

// DefaultForgetAfter is how long a proxy's snapshot outlives its last
// stream, so that a proxy reconnecting after a blip is not re-translated.
const DefaultForgetAfter = 30 * time.Second

// Options configure a Server. Translate is required.
type Options struct {
	Translate TranslateFunc
	Logger    *slog.Logger // nil: slog.Default()
	// ForgetAfter is how long after a proxy's last stream closes its cached
	// snapshot and status are dropped; 0 means DefaultForgetAfter.
	ForgetAfter time.Duration
	// Metrics, if set, records istiod's pilot_* metrics (see NewMetrics).
	Metrics *Metrics
	// ShareKey, if set, lets proxies of one class share one translated
	// snapshot (see ShareKeyFunc); nil translates every proxy on its own.
	ShareKey ShareKeyFunc
	// MaxInFlight bounds the responses sent and not yet ACKed across all
	// proxies (see throttledCache); 0 means DefaultMaxInFlight.
	MaxInFlight int
	// OnConnect, if set, is called when a node ID's first stream is opened
	// and its node accepted; OnDisconnect when its last stream has closed.
	// Both are called outside the server's locks, on the stream's
	// goroutine: they must not block.
	OnConnect    func(node *corev3.Node)
	OnDisconnect func(nodeID string)
}

// Server is an ADS server that keeps each connected proxy's snapshot in
// step with the latest mesh snapshot given to Update.
type Server struct {
	log         *slog.Logger
	translate   TranslateFunc
	shareKey    ShareKeyFunc
	shared      shared
	forgetAfter time.Duration
	cache       *throttledCache

	onConnect    func(node *corev3.Node)
	onDisconnect func(nodeID string)

	latest atomic.Pointer[model.Snapshot]
	// changedAt is when the latest snapshot was given to Update (Unix ns),
	// the start of a config change's convergence.
	changedAt atomic.Int64
	metrics   *Metrics
	// kick wakes the push worker; capacity 1 so bursts of Update coalesce
	// into one pass over the proxies with whatever snapshot is latest then.
	kick chan struct{}

	mu      sync.Mutex
	proxies map[string]*proxyState
	streams map[streamKey]*streamState
	stop    context.CancelFunc // ends Serve
	done    chan struct{}      // closed when Serve has returned
	grpc    *grpc.Server
}

// NewServer returns a Server that serves nothing until Serve is called.
// It panics if opts.Translate is nil, a programming error.
func NewServer(opts Options) *Server {
	if opts.Translate == nil {
		panic("xds.NewServer: Options.Translate is nil")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.ForgetAfter <= 0 {
		opts.ForgetAfter = DefaultForgetAfter
	}
	if opts.MaxInFlight <= 0 {
		opts.MaxInFlight = DefaultMaxInFlight
	}
	if opts.Metrics == nil {
		opts.Metrics = NewMetrics(nil)
	}
	log := opts.Logger.With("component", "xds")
	return &Server{
		metrics:      opts.Metrics,
		log:          log,
		translate:    opts.Translate,
		shareKey:     opts.ShareKey,
		forgetAfter:  opts.ForgetAfter,
		onConnect:    opts.OnConnect,
		onDisconnect: opts.OnDisconnect,
		// ads=true: hold EDS/RDS answers until the proxy names every
		// resource, which is what keeps ADS updates ordered and consistent.
		cache:   newThrottledCache(cachev3.NewSnapshotCache(true, cachev3.IDHash{}, cacheLogger{log}), opts.MaxInFlight),
		kick:    make(chan struct{}, 1),
		proxies: map[string]*proxyState{},
		streams: map[streamKey]*streamState{},
	}
}

// Update makes snap the mesh snapshot every proxy is reconciled against. It
// never blocks: the push happens on the server's worker, and updates that
// arrive while a push is running collapse into one more push of the latest.
func (s *Server) Update(snap *model.Snapshot) {
	if snap == nil {
		return
	}
	s.changedAt.Store(time.Now().UnixNano())
	s.latest.Store(snap)
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Serve serves ADS (state of the world and delta) on lis until ctx is done
// or Shutdown is called. It returns nil after a requested stop.
func (s *Server) Serve(ctx context.Context, lis net.Listener) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	gs := grpc.NewServer(
		// Proxies keep one ADS stream open for hours; let them ping to keep
		// NATs and load balancers from dropping it, and drop dead peers.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 15 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
	)
	// The xDS server's context ends every open stream on shutdown; without
	// that GracefulStop would wait forever on long-lived ADS streams.
	xs := serverv3.NewServer(ctx, s.cache, callbacks{s: s, ctx: ctx})
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(gs, xs)

	s.mu.Lock()
	if s.done != nil {
		s.mu.Unlock()
		return errors.New("xds: Serve called twice")
	}
	done := make(chan struct{})
	s.stop, s.done, s.grpc = cancel, done, gs
	s.mu.Unlock()
	defer close(done)

	s.log.Info("serving xDS (ADS, SotW and delta)", "address", lis.Addr().String())
	var wg sync.WaitGroup
	wg.Go(func() { s.pushLoop(ctx) })
	wg.Go(func() {
		<-ctx.Done()
		gs.GracefulStop()
	})
	err := gs.Serve(lis)
	// A stop requested before gs.Serve started makes it fail with
	// ErrServerStopped; that is still a requested stop.
	requested := ctx.Err() != nil
	cancel()
	wg.Wait()
	s.stopForgetTimers()
	if err != nil && !requested {
		return fmt.Errorf("xds: serve on %s: %w", lis.Addr(), err)
	}
	return nil
}

// Shutdown ends open streams and stops serving. If ctx ends first, open
// connections are closed forcibly and ctx's error is returned.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	stop, done, gs := s.stop, s.done, s.grpc
	s.mu.Unlock()
	if stop == nil {
		return nil
	}
	stop()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		gs.Stop()
		<-done
		return fmt.Errorf("xds: shutdown: %w", ctx.Err())
	}
}

// pushLoop is the single goroutine that pushes config changes, so that
// callers of Update (informers, file watchers) never wait on proxies.
func (s *Server) pushLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.kick:
		}
		start := time.Now()
		changedAt := time.Unix(0, s.changedAt.Load())
		states := s.connected()
		for _, st := range states {
			if ctx.Err() != nil {
				return
			}
			s.metrics.queueTime.Observe(time.Since(changedAt).Seconds())
			s.reconcileChange(ctx, st, changedAt)
		}
		s.log.Debug("pushed config", "proxies", len(states), "took", time.Since(start))
	}
}

// connected returns the proxies with at least one open stream, in no
// particular order.
func (s *Server) connected() []*proxyState {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*proxyState, 0, len(s.proxies))
	for _, st := range s.proxies {
		if st.streams > 0 {
			out = append(out, st)
		}
	}
	return out
}
