package listener

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"
)

// Draining: removed and replaced listeners, /drain_listeners (stop now or gracefully) and shutdown,
// and the per-listener connection tracking that lets a drain wait for its connections.

// drainJob is something draining in the background; cut ends it now.
type drainJob struct{ cut func() }

// drainServers shuts HTTP servers down gracefully in the background.
func (m *Manager) drainServers(servers []*httpServer) {
	if len(servers) == 0 {
		return
	}
	job := &drainJob{cut: func() {
		for _, s := range servers {
			_ = s.srv.Close()
		}
	}}
	m.startDrainLocked(job, func(ctx context.Context) { shutdownAll(ctx, servers) })
}

func shutdownAll(ctx context.Context, servers []*httpServer) {
	var wg sync.WaitGroup
	for _, s := range servers {
		wg.Go(func() {
			if err := s.srv.Shutdown(ctx); err != nil {
				_ = s.srv.Close()
			}
		})
	}
	wg.Wait()
}

// startDrainLocked runs drain with the manager's drain timeout, owned by the manager's WaitGroup.
func (m *Manager) startDrainLocked(job *drainJob, drain func(ctx context.Context)) {
	m.draining.Add(1)
	m.drainSet[job] = true
	go func() {
		defer m.draining.Done()
		defer func() {
			m.mu.Lock()
			delete(m.drainSet, job)
			m.mu.Unlock()
		}()
		ctx, cancel := context.WithTimeout(context.Background(), m.drain)
		defer cancel()
		drain(ctx)
	}()
}

// stopLocked stops l accepting now and drains it in the background: HTTP servers finish their
// requests, connection handlers (TCP proxies) get until the drain timeout, then are closed.
func (m *Manager) stopLocked(l *running) {
	if l.stopped {
		return
	}
	l.stopped = true
	if l.ln == nil {
		// No socket: nothing more is handed to it, and its HTTP servers drain their connections.
		// Connections it serves with a TCP proxy belong to the accepting listener's drain.
		m.indexVirtualLocked()
		if set := l.set.Load(); set != nil {
			m.drainServers(set.servers())
		}
		l.cancel()
		return
	}
	m.log.Info("listener draining", "listener", l.spec.Name, "address", l.ln.Addr().String())
	_ = l.ln.Close()
	m.totalDraining.Inc()
	servers := l.set.Load().servers()
	job := &drainJob{cut: func() {
		l.cancel()
		l.conns.closeAll()
		for _, s := range servers {
			_ = s.srv.Close()
		}
	}}
	m.startDrainLocked(job, func(ctx context.Context) {
		defer m.totalDraining.Dec()
		defer l.cancel()
		<-l.served // no connection is added to l.conns after this
		var wg sync.WaitGroup
		wg.Go(func() { shutdownAll(ctx, servers) })
		if !l.conns.wait(ctx) {
			m.log.Warn("listener drain timed out; closing its connections", "listener", l.name)
			l.cancel()
			l.conns.closeAll()
			l.conns.wait(context.Background())
		}
		wg.Wait()
	})
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
	for job := range m.drainSet {
		job.cut()
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
			m.beginGracefulDrainLocked(l)
		}
	}
	m.log.Info("listeners draining gracefully", "inbound_only", inboundOnly, "drain", m.drain)
	m.drainTimers = append(m.drainTimers, time.AfterFunc(m.drain, func() { m.Drain(inboundOnly, false) }))
}

func (m *Manager) beginGracefulDrainLocked(l *running) {
	l.draining.Store(true)
	m.keepDrainSignal(l)
}

// keepDrainSignal tells l's HTTP servers, new ones included, whether l drains: while it does,
// every HTTP/1 connection closes after its response (Connection: close), HTTP/2 connections get a
// GOAWAY after their current stream, and idle ones close now.
func (m *Manager) keepDrainSignal(l *running) {
	if !l.draining.Load() {
		return
	}
	if set := l.set.Load(); set != nil {
		for _, s := range set.servers() {
			s.srv.SetKeepAlivesEnabled(false)
		}
	}
}

// Draining reports whether /drain_listeners (or shutdown) has begun draining any listener.
func (m *Manager) Draining() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.graceful != scopeNone || m.stopped != scopeNone || m.closed
}

// tracker counts a listener's connections until they are done: for those being inspected, in a
// TLS handshake or served by a connection handler, when their goroutine ends; for those handed to an
// HTTP server, when they close (which covers connections the server no longer tracks: upgrades).
type tracker struct {
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

func (t *tracker) add(c net.Conn) {
	t.wg.Add(1)
	t.mu.Lock()
	if t.conns == nil {
		t.conns = make(map[net.Conn]struct{})
	}
	t.conns[c] = struct{}{}
	t.mu.Unlock()
}

// done marks c finished.
func (t *tracker) done(c net.Conn) {
	t.mu.Lock()
	delete(t.conns, c)
	t.mu.Unlock()
	t.wg.Done()
}

func (t *tracker) closeAll() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for c := range t.conns {
		_ = c.Close()
	}
}

// wait waits for every connection's goroutine to finish, or ctx; it reports whether they did.
func (t *tracker) wait(ctx context.Context) bool {
	done := make(chan struct{})
	go func() {
		t.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return true
	case <-ctx.Done():
		return false
	}
}

// SetDrainTimeout changes the drain timeout of drains that start from now on: a proxy that is
// terminating gives its inbound connections the termination drain duration (Istio's
// terminationDrainDuration) rather than the listener-update one.
func (m *Manager) SetDrainTimeout(d time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if d > 0 {
		m.drain = d
	}
}
