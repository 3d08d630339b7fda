package xds

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/keepalive"

	"github.com/trellis-mesh/trellis/internal/grpcbuf"
	"github.com/trellis-mesh/trellis/internal/model"
)

// DefaultForgetAfter is how long a proxy's snapshot outlives its last
// stream, so that a proxy reconnecting after a blip is not re-translated.
const DefaultForgetAfter = 30 * time.Second

// DefaultMaxConnectionAge is istiod's default keepaliveMaxServerConnectionAge
// (its Helm chart's 30m): a proxy's connection is closed after about that
// long (gRPC adds ±10% jitter), and the proxy reconnects. Proxies so spread
// over replicas added since they connected, and an auto-registered
// WorkloadEntry's connectedAt is never older than this while its proxy
// lives. MaxConnectionAgeGrace is istiod's too.
const (
	DefaultMaxConnectionAge = 30 * time.Minute
	maxConnectionAgeGrace   = 10 * time.Second
)

// Options configure a Server. Translate is required.
type Options struct {
	Translate TranslateFunc
	Logger    *slog.Logger // nil: slog.Default()
	// ForgetAfter is how long after a proxy's last stream closes its cached
	// snapshot and status are dropped; 0 means DefaultForgetAfter.
	ForgetAfter time.Duration
	// MaxConnectionAge is how long a proxy's connection may last before it
	// is closed for the proxy to reconnect; 0 means
	// DefaultMaxConnectionAge, a negative value no limit.
	MaxConnectionAge time.Duration
	// Metrics, if set, records istiod's pilot_* metrics (see NewMetrics).
	Metrics *Metrics
	// ShareKey, if set, lets proxies of one class share one translated
	// snapshot (see ShareKeyFunc); nil translates every proxy on its own.
	ShareKey ShareKeyFunc
	// MaxInFlight bounds the responses sent and not yet ACKed across all
	// proxies (see throttle); 0 means DefaultMaxInFlight.
	MaxInFlight int
	// UnthrottledBytes: responses whose resources encode to at most this
	// many bytes skip the throttle (0 means DefaultUnthrottledBytes; a
	// negative value throttles every response).
	UnthrottledBytes int

	// EndpointDelta reports, for a new mesh snapshot, which service
	// hostnames' endpoints changed when nothing else did, and the
	// addresses of the workloads that changed (ok false: anything else
	// changed, or unsure: translate everything). A proxy at one of those
	// addresses is translated in full: its own inbound side may differ.
	EndpointDelta func(old, new *model.Snapshot) (change model.EndpointChange, ok bool)
	// TranslateEndpoints returns the ClusterLoadAssignments that Translate
	// would give proxy for the clusters of these hosts (same names, same
	// bytes), and nothing else. With EndpointDelta, an endpoint-only change
	// replaces just those in each class's snapshot.
	TranslateEndpoints func(snap *model.Snapshot, proxy *model.Proxy, hosts []string) ([]*endpointv3.ClusterLoadAssignment, error)

	// OnConnect is called each time a stream of a node ID opens, after its
	// node was accepted, so that it knows when the proxy last connected: a
	// proxy reconnecting before the close of its old stream was seen has
	// two streams for a moment (istiod, too, registers every connection).
	// OnDisconnect is called when the node's last stream closes. Both are
	// called outside any server lock, in order, never concurrently for the
	// same node.
	OnConnect    func(node *corev3.Node)
	OnDisconnect func(nodeID string)
	// OnHealth is called with each health report of a proxy that probes
	// its workload (a request of HealthInfoType: healthy without an error
	// detail, else unhealthy with its message), in order with the node's
	// OnConnect and OnDisconnect calls and under the same rules.
	OnHealth func(nodeID string, healthy bool, message string)
}

// HealthInfoType is the type URL of the health reports Istio's agent sends
// on its ADS stream; they are never answered.
const HealthInfoType = "type.googleapis.com/istio.v1.HealthInformation"

// Server is an ADS server that keeps each connected proxy's config in
// step with the latest mesh snapshot given to Update. Proxies of one class
// (see ShareKeyFunc) share one translated, encoded snapshot; streams hold
// pointers into it, not copies.
type Server struct {
	log                *slog.Logger
	translate          TranslateFunc
	shareKey           ShareKeyFunc
	endpointDelta      func(old, new *model.Snapshot) (model.EndpointChange, bool)
	translateEndpoints func(*model.Snapshot, *model.Proxy, []string) ([]*endpointv3.ClusterLoadAssignment, error)
	onConnect          func(*corev3.Node)
	onDisconnect       func(string)
	onHealth           func(nodeID string, healthy bool, message string)
	memory             memoryReleaser
	classes            classes
	forgetAfter        time.Duration
	maxConnAge         time.Duration // 0: none
	throttle           *throttle
	streamIDs          atomic.Int64
	// translating bounds translations in flight to the CPUs: 2000 proxies
	// connecting at once start twenty classes' translations, and each
	// holds its resources (10 MB at 1000 services) until encoded.
	translating chan struct{}

	latest  atomic.Pointer[mesh]
	meshSeq atomic.Uint64
	pushed  *mesh // the mesh the push worker last pushed; its own
	metrics *Metrics
	// kick wakes the push worker; capacity 1 so bursts of Update coalesce
	// into one pass over the proxies with whatever snapshot is latest then.
	kick chan struct{}

	mu      sync.Mutex
	proxies map[string]*proxyState
	streams map[streamKey]*stream
	stop    context.CancelFunc // ends Serve
	done    chan struct{}      // closed when Serve has returned
	grpc    *grpc.Server
}

// mesh is one snapshot given to Update, numbered in order, with when it
// was given (the start of its convergence).
type mesh struct {
	snap *model.Snapshot
	seq  uint64
	at   time.Time
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
	switch {
	case opts.MaxConnectionAge == 0:
		opts.MaxConnectionAge = DefaultMaxConnectionAge
	case opts.MaxConnectionAge < 0:
		opts.MaxConnectionAge = 0
	}
	if opts.Metrics == nil {
		opts.Metrics = NewMetrics(nil)
	}
	log := opts.Logger.With("component", "xds")
	srv := &Server{
		metrics:      opts.Metrics,
		log:          log,
		translate:    opts.Translate,
		shareKey:     opts.ShareKey,
		forgetAfter:  opts.ForgetAfter,
		maxConnAge:   opts.MaxConnectionAge,
		throttle:     newThrottle(opts.MaxInFlight, opts.UnthrottledBytes),
		translating:  make(chan struct{}, runtime.GOMAXPROCS(0)),
		kick:         make(chan struct{}, 1),
		proxies:      map[string]*proxyState{},
		streams:      map[streamKey]*stream{},
		onConnect:    opts.OnConnect,
		onDisconnect: opts.OnDisconnect,
		onHealth:     opts.OnHealth,
	}
	if opts.EndpointDelta != nil && opts.TranslateEndpoints != nil {
		srv.endpointDelta, srv.translateEndpoints = opts.EndpointDelta, opts.TranslateEndpoints
	}
	return srv
}

// Update makes snap the mesh snapshot every proxy is reconciled against. It
// never blocks: the push happens on the server's worker, and updates that
// arrive while a push is running collapse into one more push of the latest.
func (s *Server) Update(snap *model.Snapshot) {
	if snap == nil {
		return
	}
	s.latest.Store(&mesh{snap: snap, seq: s.meshSeq.Add(1), at: time.Now()})
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// keepalive is istiod's: pings every 30 s, a peer silent for 10 s after
// one is dropped, and connections closed at their maximum age (streams
// still open get a grace period, no longer than the age).
func (s *Server) keepalive() keepalive.ServerParameters {
	p := keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}
	if s.maxConnAge > 0 {
		p.MaxConnectionAge, p.MaxConnectionAgeGrace = s.maxConnAge, min(maxConnectionAgeGrace, s.maxConnAge)
	}
	return p
}

// MaxConnectionAge is how long a proxy's connection lasts at most (0: no
// limit); see DefaultMaxConnectionAge.
func (s *Server) MaxConnectionAge() time.Duration { return s.maxConnAge }

// Serve serves ADS (state of the world and delta) on lis until ctx is done
// or Shutdown is called. It returns nil after a requested stop.
func (s *Server) Serve(ctx context.Context, lis net.Listener) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	gs := grpc.NewServer(
		// Proxies keep one ADS stream open for hours; let them ping to keep
		// NATs and load balancers from dropping it, and drop dead peers.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 15 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(s.keepalive()),
		// Responses shared by a class are encoded once (see rawResponse).
		grpc.ForceServerCodecV2(newCodec()),
		// Fixed receive windows, roomy enough for a SotW request naming
		// thousands of resources. Left unset, gRPC estimates them by
		// answering each burst of data with a PING: at 2000 proxies that
		// is thousands of extra writes every time they all ACK.
		grpc.InitialWindowSize(1<<20), grpc.InitialConnWindowSize(1<<20),
		// Received frames in buffers that are not cleared (see grpcbuf).
		experimental.BufferPool(grpcbuf.Pool),
	)
	// Serve's context ends every open stream on shutdown; without that
	// GracefulStop would wait forever on long-lived ADS streams.
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(gs, adsService{s: s, ctx: ctx})

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
	wg.Go(func() { s.memory.run(ctx, s.throttle.busy, freeOSMemory) })
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
		s.push(ctx)
	}
}
