package listener

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/trellis-mesh/trellis/internal/proxy/h1"
	"github.com/trellis-mesh/trellis/internal/proxy/stats"
)

// Spec is one desired listener.
type Spec struct {
	Name    string
	Address string // host:port to bind
	// Bind false registers the listener without a socket (Envoy's bind_to_port: false).
	Bind bool
	// Version identifies the listener's config: equal versions mean nothing to do.
	Version string
	// Handler serves the listener's requests. If it has a ConnState(net.Conn, http.ConnState)
	// method, it is told about connections too.
	Handler http.Handler
	// IdleTimeout closes keep-alive connections idle this long; 0 means none. It is fixed when the
	// socket is bound.
	IdleTimeout time.Duration
	// Inbound is Envoy's traffic_direction INBOUND, which /drain_listeners?inboundonly selects.
	Inbound bool
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

type running struct {
	spec    Spec
	ln      net.Listener
	srv     *h1.Server
	handler atomic.Pointer[handlerBox]
	served  chan struct{}
	// draining is set when a graceful drain covers this listener: it still accepts, but every
	// HTTP/1 response carries Connection: close and HTTP/2 connections get a GOAWAY. The HTTP server
	// reads it per response (net/http does through SetKeepAlivesEnabled(false)).
	draining atomic.Bool
	// stopped is set, under Manager.mu, once the socket is closed and the connections drain.
	stopped bool
}

func (l *running) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	l.handler.Load().h.ServeHTTP(w, r)
}

// Manager runs the listeners. Its methods are safe for concurrent use.
type Manager struct {
	log   *slog.Logger
	store *stats.Store
	drain time.Duration

	mu       sync.Mutex
	active   map[string]*running
	draining sync.WaitGroup
	drainSet map[*running]bool // listeners still draining, so Shutdown can cut them short
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
		active:        make(map[string]*running),
		drainSet:      make(map[*running]bool),
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
		l.handler.Store(&handlerBox{h: s.Handler})
		l.spec = s
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
		if m.graceful.covers(l.spec) {
			m.startDrainLocked(l)
		}
		m.serve(l)
	}
	m.totalActive.Set(int64(len(m.active)))
	return errors.Join(errs...)
}

func checkSpecs(specs []Spec) error {
	names := make(map[string]bool, len(specs))
	addrs := make(map[string]string, len(specs))
	for _, s := range specs {
		if names[s.Name] {
			return fmt.Errorf("listener %q: duplicate name", s.Name)
		}
		names[s.Name] = true
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

func (m *Manager) bind(s Spec) (*running, error) {
	l := &running{spec: s, served: make(chan struct{})}
	l.handler.Store(&handlerBox{h: s.Handler})
	if !s.Bind {
		close(l.served)
		return l, nil
	}
	ln, err := net.Listen("tcp", s.Address)
	if err != nil {
		return nil, fmt.Errorf("listener %q: bind %s: %w", s.Name, s.Address, err)
	}
	l.ln = ln
	statPrefix := "listener." + strings.ReplaceAll(ln.Addr().String(), ":", "_") + "."
	cxTotal := m.store.Counter(statPrefix + "downstream_cx_total")
	cxActive := m.store.Gauge(statPrefix + "downstream_cx_active")
	// trellis's own HTTP/1.1 codec; HTTP/2 prior knowledge is taken too (Envoy's AUTO codec).
	l.srv = &h1.Server{
		Handler:        l,
		IdleTimeout:    s.IdleTimeout,
		MaxHeaderBytes: h1.DefaultMaxHeaderBytes, // Envoy's max_request_headers_kb default
		ErrorLog:       m.log,
		ConnState: func(c net.Conn, st http.ConnState) {
			switch st {
			case http.StateNew:
				cxTotal.Inc()
				cxActive.Inc()
			case http.StateClosed, http.StateHijacked:
				cxActive.Dec()
			}
			if cs, ok := l.handler.Load().h.(connStater); ok {
				cs.ConnState(c, st)
			}
		},
	}
	return l, nil
}

func (m *Manager) serve(l *running) {
	if l.srv == nil {
		return
	}
	m.log.Info("listener started", "listener", l.spec.Name, "address", l.ln.Addr().String())
	go func() {
		defer close(l.served)
		if err := l.srv.Serve(l.ln); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
			m.log.Error("listener stopped", "listener", l.spec.Name, "error", err)
		}
	}()
}

// stopLocked stops l accepting now and drains it in the background.
func (m *Manager) stopLocked(l *running) {
	if l.srv == nil || l.stopped {
		return
	}
	l.stopped = true
	m.log.Info("listener draining", "listener", l.spec.Name, "address", l.ln.Addr().String())
	_ = l.ln.Close()
	m.totalDraining.Inc()
	m.draining.Add(1)
	m.drainSet[l] = true
	go func() {
		defer m.draining.Done()
		defer m.totalDraining.Dec()
		defer func() {
			m.mu.Lock()
			delete(m.drainSet, l)
			m.mu.Unlock()
		}()
		ctx, cancel := context.WithTimeout(context.Background(), m.drain)
		defer cancel()
		if err := l.srv.Shutdown(ctx); err != nil {
			m.log.Warn("listener drain timed out; closing its connections", "listener", l.spec.Name, "error", err)
			_ = l.srv.Close()
		}
		<-l.served
	}()
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

// Shutdown stops every listener accepting and waits until their requests finish, the drain timeout
// passes, or ctx ends; connections left then are closed. Apply fails afterwards.
func (m *Manager) Shutdown(ctx context.Context) error {
	m.mu.Lock()
	m.closed = true
	for _, t := range m.drainTimers {
		t.Stop()
	}
	for name, l := range m.active {
		delete(m.active, name)
		m.stopLocked(l)
		m.removed.Inc()
	}
	m.totalActive.Set(0)
	m.mu.Unlock()

	done := make(chan struct{})
	go func() {
		m.draining.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	m.mu.Lock()
	for l := range m.drainSet {
		_ = l.srv.Close()
	}
	m.mu.Unlock()
	<-done
	return fmt.Errorf("listener drain cut short, connections closed: %w", ctx.Err())
}

// drainScope is which listeners a /drain_listeners covers.
type drainScope uint8

const (
	scopeNone drainScope = iota
	scopeInbound
	scopeAll
)

func (d drainScope) covers(s Spec) bool {
	return d == scopeAll || d == scopeInbound && s.Inbound
}

// Drain is Envoy's /drain_listeners: for every listener (only the inbound ones when inboundOnly).
// Without graceful they stop accepting now and their connections drain as a removed listener's do.
// With graceful they first go through a drain period of the manager's drain timeout, still
// accepting, with every response closing its connection (HTTP/1 Connection: close, HTTP/2 GOAWAY);
// then they stop. Listeners LDS adds later inside the scope drain, or stay unbound, likewise.
func (m *Manager) Drain(inboundOnly, graceful bool) {
	scope := scopeAll
	if inboundOnly {
		scope = scopeInbound
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return
	}
	if !graceful {
		m.stopped = max(m.stopped, scope)
		for _, l := range m.active {
			if scope.covers(l.spec) {
				m.stopLocked(l)
			}
		}
		return
	}
	if m.graceful >= scope {
		return // a drain of this scope is already under way
	}
	m.graceful = scope
	for _, l := range m.active {
		if scope.covers(l.spec) {
			m.startDrainLocked(l)
		}
	}
	m.log.Info("listeners draining gracefully", "inbound_only", inboundOnly, "drain", m.drain)
	m.drainTimers = append(m.drainTimers, time.AfterFunc(m.drain, func() { m.Drain(inboundOnly, false) }))
}

func (m *Manager) startDrainLocked(l *running) {
	l.draining.Store(true)
	if l.srv != nil {
		// net/http then closes every HTTP/1 connection after its response (Connection: close) and
		// sends HTTP/2 connections a GOAWAY after their current stream; idle ones close now.
		l.srv.SetKeepAlivesEnabled(false)
	}
}

// Draining reports whether /drain_listeners (or shutdown) has begun draining any listener.
func (m *Manager) Draining() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.graceful != scopeNone || m.stopped != scopeNone || m.closed
}
