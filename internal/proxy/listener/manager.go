package listener

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/trellis-mesh/trellis/internal/origdst"
	"github.com/trellis-mesh/trellis/internal/proxy/stats"
	"github.com/trellis-mesh/trellis/internal/proxy/xdsconfig"
)

// Spec is one desired listener.
type Spec struct {
	Name    string
	Address string // host:port to bind
	// Bind false registers the listener without a socket (Envoy's bind_to_port: false).
	Bind bool
	// Version identifies the listener's config: equal versions mean nothing to do.
	Version string

	// Filters are the listener filters run on each new connection before its chain is chosen.
	Filters xdsconfig.ListenerFilters
	// Chains are chosen per connection by their Match; Default serves connections none matches,
	// and without it those are closed.
	Chains  []Chain
	Default *Chain

	// Handler and IdleTimeout, when Chains and Default are empty, make the listener one plaintext
	// HTTP chain (codec AUTO) serving Handler.
	Handler     http.Handler
	IdleTimeout time.Duration

	// Inbound is Envoy's traffic_direction INBOUND, which /drain_listeners?inboundonly selects.
	Inbound bool

	// UseOriginalDst hands each accepted connection to the listener without a socket (Bind false)
	// whose address is the connection's original destination (SO_ORIGINAL_DST, after an iptables
	// REDIRECT), else the one on 0.0.0.0 and that port; with neither the listener serves it itself.
	// Either way, chains match, and ORIGINAL_DST clusters dial, the original destination.
	UseOriginalDst bool
}

// Chain is a filter chain ready to serve: a match, optional TLS termination, and either HTTP or a
// connection handler (the TCP proxy).
type Chain struct {
	// Name identifies the chain across updates: an HTTP chain that keeps its name, match, codec and
	// idle timeout keeps its server and connections, and serves them with the new handler.
	Name  string
	Match xdsconfig.FilterChainMatch
	// TLS terminates TLS with this config; nil is plaintext.
	TLS                 *tls.Config
	TLSHandshakeTimeout time.Duration
	HTTP                *HTTPChain
	Conn                ConnHandler
}

// ConnHandler serves a whole connection (after TLS, when the chain terminates it). ctx ends when
// the listener's drain is over and connections must close. The listener closes c afterwards.
type ConnHandler interface {
	ServeConn(ctx context.Context, c net.Conn, info *ConnInfo)
}

// Info describes a running listener.
type Info struct {
	Name string
	// Address is the bound address (the actual port when the spec asked for port 0).
	Address string
	Bind    bool
}

type connStater interface {
	ConnState(net.Conn, http.ConnState)
}

// handlerBox lets an interface value live in an atomic.Pointer.
type handlerBox struct{ h http.Handler }

// httpServer is an HTTP chain's server, which may outlive the chain config that created it.
type httpServer struct {
	key     string
	srv     ConnServer
	handler atomic.Pointer[handlerBox]
}

func (s *httpServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.handler.Load().h.ServeHTTP(w, r)
}

func (s *httpServer) connState(c net.Conn, st http.ConnState) {
	if cs, ok := s.handler.Load().h.(connStater); ok {
		cs.ConnState(c, st)
	}
}

type runChain struct {
	cfg  Chain
	http *httpServer // nil for connection handlers
}

// chainSet is a listener's current chains, swapped whole on update.
type chainSet struct {
	filters        xdsconfig.ListenerFilters
	useOriginalDst bool
	chains         []*runChain
	def            *runChain
}

func (cs *chainSet) servers() []*httpServer {
	var out []*httpServer
	for _, c := range append(cs.chains[:len(cs.chains):len(cs.chains)], cs.def) {
		if c != nil && c.http != nil {
			out = append(out, c.http)
		}
	}
	return out
}

type running struct {
	spec Spec // replaced under Manager.mu by an in-place update
	// name is spec.Name, which an in-place update keeps: the listener's own goroutines read it
	// without Manager.mu.
	name   string
	ln     net.Listener
	set    atomic.Pointer[chainSet]
	conns  tracker
	ctx    context.Context // ends when the listener's connections must close
	cancel context.CancelFunc
	served chan struct{}

	cxTotal, noChain, preTimeout, tlsOK, tlsFail *stats.Counter
	cxActive                                     *stats.Gauge

	// draining is set when a graceful drain covers this listener: it still accepts, but every
	// HTTP/1 response carries Connection: close and HTTP/2 connections get a GOAWAY.
	draining atomic.Bool
	// stopped is set, under Manager.mu, once the socket is closed and the connections drain.
	stopped bool
}

// Manager runs the listeners. Its methods are safe for concurrent use.
type Manager struct {
	log     *slog.Logger
	store   *stats.Store
	drain   time.Duration
	inspect inspectStats
	// origDst finds a connection's original destination for UseOriginalDst listeners; tests
	// replace it, since SO_ORIGINAL_DST needs an iptables REDIRECT.
	origDst func(net.Conn) (netip.AddrPort, error)
	// virtual indexes the listeners without a socket by address, for the use_original_dst handoff
	// on the accept path; replaced whole after every change.
	virtual atomic.Pointer[map[netip.AddrPort]*running]

	mu       sync.Mutex
	active   map[string]*running
	draining sync.WaitGroup
	drainSet map[*drainJob]bool // drains still running, so Shutdown can cut them short
	closed   bool
	// graceful and stopped are the scopes /drain_listeners has put into graceful drain and stopped;
	// listeners LDS adds later inside them start draining, or are not bound at all.
	graceful, stopped drainScope
	drainTimers       []*time.Timer

	added, removed, modified, createSuccess, createFailure *stats.Counter
	totalActive, totalDraining                             *stats.Gauge
}

// NewManager returns a manager with no listeners. drain bounds how long a removed listener's
// connections may take to finish.
func NewManager(log *slog.Logger, store *stats.Store, drain time.Duration) *Manager {
	return &Manager{
		log:           log,
		store:         store,
		drain:         drain,
		inspect:       newInspectStats(store),
		origDst:       origdst.Lookup,
		active:        make(map[string]*running),
		drainSet:      make(map[*drainJob]bool),
		added:         store.Counter("listener_manager.listener_added"),
		removed:       store.Counter("listener_manager.listener_removed"),
		modified:      store.Counter("listener_manager.listener_modified"),
		createSuccess: store.Counter("listener_manager.listener_create_success"),
		createFailure: store.Counter("listener_manager.listener_create_failure"),
		totalActive:   store.Gauge("listener_manager.total_listeners_active"),
		totalDraining: store.Gauge("listener_manager.total_listeners_draining"),
	}
}

// Apply makes the running listeners match specs (the complete desired set). It returns an error,
// having changed nothing, when a new socket cannot be bound or the specs conflict.
func (m *Manager) Apply(specs []Spec) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return errors.New("listener manager is shut down")
	}
	if err := checkSpecs(specs); err != nil {
		return err
	}
	desired := make(map[string]Spec, len(specs))
	for _, s := range specs {
		desired[s.Name] = s
	}

	var start, swap []Spec
	var stop []*running
	for _, s := range specs {
		old := m.active[s.Name]
		switch {
		case old == nil:
			start = append(start, s)
		case old.spec.Version == s.Version:
		case old.spec.Address == s.Address && old.spec.Bind == s.Bind:
			swap = append(swap, s)
		default:
			start = append(start, s)
			stop = append(stop, old)
		}
	}
	for name, l := range m.active {
		if _, ok := desired[name]; !ok {
			stop = append(stop, l)
		}
	}

	// Bind first, so a failure leaves everything as it was. A socket whose address is only being
	// released by this very update cannot be bound yet; those wait until the old one is closed.
	releasing := make(map[string]bool)
	for _, l := range stop {
		if l.spec.Bind {
			releasing[l.spec.Address] = true
		}
	}
	started := make(map[string]*running, len(start))
	var later []Spec
	for i, s := range start {
		if m.stopped.covers(s) {
			start[i].Bind = false // Envoy does not start listeners that /drain_listeners stopped
			s = start[i]
		}
		if s.Bind && releasing[s.Address] {
			later = append(later, s)
			continue
		}
		l, err := m.bind(s)
		if err != nil {
			for _, l := range started {
				_ = l.ln.Close()
			}
			m.createFailure.Inc()
			return err
		}
		started[s.Name] = l
	}

	for _, s := range swap {
		l := m.active[s.Name]
		l.spec = s
		if !l.stopped {
			set, retired := m.buildSet(s, l.set.Load())
			l.set.Store(set)
			m.keepDrainSignal(l)
			m.drainServers(retired)
		}
		m.modified.Inc()
		m.log.Info("listener updated in place", "listener", s.Name, "address", s.Address)
	}
	replaced := make(map[string]bool)
	for _, l := range stop {
		delete(m.active, l.spec.Name)
		m.stopLocked(l)
		if _, still := desired[l.spec.Name]; still {
			replaced[l.spec.Name] = true
			m.modified.Inc()
		} else {
			m.removed.Inc()
		}
	}
	var errs []error
	for _, s := range later {
		if m.stopped.covers(s) {
			s.Bind = false
		}
		l, err := m.bind(s)
		if err != nil {
			m.createFailure.Inc()
			errs = append(errs, err)
			continue
		}
		started[s.Name] = l
	}
	for _, s := range start {
		l := started[s.Name]
		if l == nil {
			continue
		}
		if !replaced[s.Name] {
			m.added.Inc()
		}
		m.active[s.Name] = l
		m.createSuccess.Inc()
		m.serve(l)
		if m.graceful.covers(l.spec) {
			m.beginGracefulDrainLocked(l)
		}
	}
	m.totalActive.Set(int64(len(m.active)))
	m.indexVirtualLocked()
	return errors.Join(errs...)
}

// indexVirtualLocked publishes the running listeners without a socket, by address, for handoff.
func (m *Manager) indexVirtualLocked() {
	idx := make(map[netip.AddrPort]*running)
	for _, l := range m.active {
		if l.spec.Bind || l.stopped || l.set.Load() == nil {
			continue
		}
		if ap, err := netip.ParseAddrPort(l.spec.Address); err == nil {
			idx[netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())] = l
		}
	}
	m.virtual.Store(&idx)
}

var anyIPv4 = netip.IPv4Unspecified()

// handoffTarget is the listener without a socket that serves connections originally sent to dst:
// the one on exactly that address, else the wildcard one on its port (Envoy's order).
func (m *Manager) handoffTarget(dst netip.AddrPort) *running {
	idx := m.virtual.Load()
	if idx == nil {
		return nil
	}
	if l := (*idx)[dst]; l != nil {
		return l
	}
	return (*idx)[netip.AddrPortFrom(anyIPv4, dst.Port())]
}

func checkSpecs(specs []Spec) error {
	names := make(map[string]bool, len(specs))
	addrs := make(map[string]string, len(specs))
	for _, s := range specs {
		if names[s.Name] {
			return fmt.Errorf("listener %q: duplicate name", s.Name)
		}
		names[s.Name] = true
		for i, c := range s.Chains {
			if (c.HTTP == nil) == (c.Conn == nil) {
				return fmt.Errorf("listener %q: chain %d (%q) needs exactly one of HTTP and Conn", s.Name, i, c.Name)
			}
		}
		if c := s.Default; c != nil && (c.HTTP == nil) == (c.Conn == nil) {
			return fmt.Errorf("listener %q: the default chain needs exactly one of HTTP and Conn", s.Name)
		}
		if !s.Bind {
			continue
		}
		if other, dup := addrs[s.Address]; dup && !strings.HasSuffix(s.Address, ":0") {
			return fmt.Errorf("listener %q: address %s is already used by listener %q", s.Name, s.Address, other)
		}
		addrs[s.Address] = s.Name
	}
	return nil
}

// buildSet makes the running chains for s. HTTP chains reuse old's servers where the name, match,
// codec and idle timeout are unchanged; the old servers not reused are returned, to be drained.
func (m *Manager) buildSet(s Spec, old *chainSet) (*chainSet, []*httpServer) {
	reusable := map[string]*httpServer{}
	if old != nil {
		for _, srv := range old.servers() {
			reusable[srv.key] = srv
		}
	}
	mk := func(c Chain) *runChain {
		if c.HTTP != nil && c.TLS != nil {
			c.TLS = alpnForCodec(c.TLS, c.HTTP.Codec)
		}
		rc := &runChain{cfg: c}
		if c.HTTP == nil {
			return rc
		}
		key := c.Name + "\x00" + fmt.Sprint(c.Match) + "\x00" + strconv.Itoa(int(c.HTTP.Codec)) + "\x00" + c.HTTP.IdleTimeout.String() + "\x00" + strconv.Itoa(c.HTTP.MaxHeaderBytes)
		srv := reusable[key]
		if srv != nil {
			delete(reusable, key)
		} else {
			srv = &httpServer{key: key}
			srv.srv = NewConnServer(*c.HTTP, srv, srv.connState, m.log.With("listener", s.Name, "filter_chain", c.Name))
		}
		srv.handler.Store(&handlerBox{h: c.HTTP.Handler})
		rc.http = srv
		return rc
	}
	set := &chainSet{filters: s.Filters, useOriginalDst: s.UseOriginalDst}
	for _, c := range s.Chains {
		set.chains = append(set.chains, mk(c))
	}
	switch {
	case s.Default != nil:
		set.def = mk(*s.Default)
	case len(s.Chains) == 0 && s.Handler != nil:
		set.def = mk(Chain{HTTP: &HTTPChain{Handler: s.Handler, IdleTimeout: s.IdleTimeout}})
	}
	var retired []*httpServer
	for _, srv := range reusable {
		retired = append(retired, srv)
	}
	return set, retired
}

// alpnForCodec drops from the ALPN list the HTTP version the chain's codec does not speak, so a
// client is never told "h2" by a chain that only serves HTTP/1.1 (net/http does the same for its
// own TLS listeners).
func alpnForCodec(cfg *tls.Config, codec xdsconfig.Codec) *tls.Config {
	drop := ""
	switch codec {
	case xdsconfig.CodecHTTP1:
		drop = "h2"
	case xdsconfig.CodecHTTP2:
		drop = "http/1.1"
	}
	if drop == "" || !slices.Contains(cfg.NextProtos, drop) {
		return cfg
	}
	cfg = cfg.Clone()
	cfg.NextProtos = slices.DeleteFunc(slices.Clone(cfg.NextProtos), func(p string) bool { return p == drop })
	return cfg
}

func (m *Manager) bind(s Spec) (*running, error) {
	l := &running{spec: s, name: s.Name, served: make(chan struct{})}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	addr := s.Address
	if !s.Bind {
		close(l.served)
	} else {
		ln, err := net.Listen("tcp", s.Address)
		if err != nil {
			l.cancel()
			return nil, fmt.Errorf("listener %q: bind %s: %w", s.Name, s.Address, err)
		}
		l.ln = ln
		addr = ln.Addr().String()
	}
	statPrefix := "listener." + strings.ReplaceAll(addr, ":", "_") + "."
	l.cxTotal = m.store.Counter(statPrefix + "downstream_cx_total")
	l.cxActive = m.store.Gauge(statPrefix + "downstream_cx_active")
	l.noChain = m.store.Counter(statPrefix + "no_filter_chain_match")
	l.preTimeout = m.store.Counter(statPrefix + "downstream_pre_cx_timeout")
	l.tlsOK = m.store.Counter(statPrefix + "ssl.handshake")
	l.tlsFail = m.store.Counter(statPrefix + "ssl.connection_error")
	return l, nil
}

// Listeners lists the running listeners, sorted by name.
func (m *Manager) Listeners() []Info {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Info, 0, len(m.active))
	for _, l := range m.active {
		info := Info{Name: l.spec.Name, Address: l.spec.Address, Bind: l.spec.Bind}
		if l.ln != nil {
			info.Address = l.ln.Addr().String()
		}
		out = append(out, info)
	}
	slices.SortFunc(out, func(a, b Info) int { return strings.Compare(a.Name, b.Name) })
	return out
}
