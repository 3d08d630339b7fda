package listener

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/trellis-mesh/trellis/internal/proxy/h1"
	"github.com/trellis-mesh/trellis/internal/proxy/xdsconfig"
)

// ConnServer serves HTTP on connections a listener has accepted and matched to an HTTP filter
// chain (already past TLS, when the chain terminates it: a *tls.Conn, whose negotiated ALPN says
// h2 or HTTP/1.1). NewConnServer is the one place that builds it.
type ConnServer interface {
	// ServeConn serves c, or closes it when the server is shut down. It may return at once or
	// when c is done: the caller is the connection's own goroutine either way.
	ServeConn(c net.Conn)
	// SetKeepAlivesEnabled(false) starts a graceful drain: every HTTP/1 response closes its
	// connection and HTTP/2 connections get a GOAWAY.
	SetKeepAlivesEnabled(v bool)
	// Shutdown stops taking connections and waits for those under way to go idle and close, or for
	// ctx to end.
	Shutdown(ctx context.Context) error
	// Close closes every connection now.
	Close() error
}

// HTTPChain is the HTTP side of a filter chain.
type HTTPChain struct {
	// Handler serves requests. If it has a ConnState(net.Conn, http.ConnState) method, it is told
	// about connections too.
	Handler http.Handler
	// Codec is which HTTP versions are accepted: AUTO takes HTTP/1.1 and HTTP/2 (prior knowledge
	// in plaintext, ALPN h2 over TLS), HTTP1 and HTTP2 only theirs.
	Codec xdsconfig.Codec
	// IdleTimeout closes keep-alive connections idle this long; 0 means none.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds a request's headers (431 beyond); 0 means h1.DefaultMaxHeaderBytes.
	MaxHeaderBytes int
}

// NewConnServer returns the server for an HTTP chain; handler is what it calls (the chain's
// handler, swappable in place). HTTP/1.1, and HTTP/2 with prior knowledge, go to the proxy's own
// codec (package h1); HTTP/2 negotiated by TLS ALPN, and chains that speak only HTTP/2, to net/http.
func NewConnServer(h HTTPChain, handler http.Handler, connState func(net.Conn, http.ConnState), log *slog.Logger) ConnServer {
	h2 := func() *netHTTPServer { return newNetHTTPServer(h, handler, connState, log) }
	if h.Codec == xdsconfig.CodecHTTP2 {
		return h2()
	}
	return &dispatchServer{
		h1: &h1.Server{
			Handler:        handler,
			IdleTimeout:    h.IdleTimeout,
			MaxHeaderBytes: h.MaxHeaderBytes,
			ConnState:      connState,
			ErrorLog:       log,
			DisableH2C:     h.Codec == xdsconfig.CodecHTTP1,
		},
		newH2: h2,
	}
}

// dispatchServer serves a connection with h1, unless TLS negotiated h2: those go to a net/http
// server, started on the first such connection.
type dispatchServer struct {
	h1    *h1.Server
	newH2 func() *netHTTPServer

	mu          sync.Mutex
	h2          *netHTTPServer
	noKeepAlive bool
	closed      bool
}

func (s *dispatchServer) ServeConn(c net.Conn) {
	if tc, ok := c.(*tls.Conn); ok && tc.ConnectionState().NegotiatedProtocol == "h2" {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			_ = c.Close()
			return
		}
		if s.h2 == nil {
			s.h2 = s.newH2()
			s.h2.srv.SetKeepAlivesEnabled(!s.noKeepAlive)
		}
		h2 := s.h2
		s.mu.Unlock()
		h2.ServeConn(c)
		return
	}
	s.h1.ServeConn(c)
}

func (s *dispatchServer) SetKeepAlivesEnabled(v bool) {
	s.h1.SetKeepAlivesEnabled(v)
	s.mu.Lock()
	s.noKeepAlive = !v
	h2 := s.h2
	s.mu.Unlock()
	if h2 != nil {
		h2.SetKeepAlivesEnabled(v)
	}
}

func (s *dispatchServer) stopH2() *netHTTPServer {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return s.h2
}

func (s *dispatchServer) Shutdown(ctx context.Context) error {
	var err error
	if h2 := s.stopH2(); h2 != nil {
		err = h2.Shutdown(ctx)
	}
	return errors.Join(err, s.h1.Shutdown(ctx))
}

func (s *dispatchServer) Close() error {
	var err error
	if h2 := s.stopH2(); h2 != nil {
		err = h2.Close()
	}
	return errors.Join(err, s.h1.Close())
}

func newNetHTTPServer(h HTTPChain, handler http.Handler, connState func(net.Conn, http.ConnState), log *slog.Logger) *netHTTPServer {
	var protocols http.Protocols
	protocols.SetHTTP2(true)
	if h.Codec == xdsconfig.CodecHTTP2 {
		protocols.SetUnencryptedHTTP2(true)
	}
	s := &netHTTPServer{
		ln: newChanListener(),
		srv: &http.Server{
			Handler:        handler,
			IdleTimeout:    h.IdleTimeout,
			MaxHeaderBytes: cmp.Or(h.MaxHeaderBytes, h1.DefaultMaxHeaderBytes),
			Protocols:      &protocols,
			ErrorLog:       slog.NewLogLogger(log.Handler(), slog.LevelDebug),
			ConnState:      connState,
		},
		served: make(chan struct{}),
	}
	go func() {
		defer close(s.served)
		_ = s.srv.Serve(s.ln)
	}()
	return s
}

// netHTTPServer is net/http's server fed connections through a listener backed by a channel.
type netHTTPServer struct {
	ln     *chanListener
	srv    *http.Server
	served chan struct{}
}

func (s *netHTTPServer) ServeConn(c net.Conn) { s.ln.hand(c) }

func (s *netHTTPServer) SetKeepAlivesEnabled(v bool) { s.srv.SetKeepAlivesEnabled(v) }

func (s *netHTTPServer) Shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	<-s.served
	return err
}

func (s *netHTTPServer) Close() error {
	err := s.srv.Close()
	<-s.served
	return err
}

// chanListener is a net.Listener whose connections are handed to it.
type chanListener struct {
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newChanListener() *chanListener {
	return &chanListener{ch: make(chan net.Conn), done: make(chan struct{})}
}

// hand gives c to the server, or closes it when the server has stopped accepting.
func (l *chanListener) hand(c net.Conn) {
	select {
	case l.ch <- c:
	case <-l.done:
		_ = c.Close()
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return chanAddr{} }

type chanAddr struct{}

func (chanAddr) Network() string { return "chan" }
func (chanAddr) String() string  { return "filter-chain" }
