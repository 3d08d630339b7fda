package listener

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/trellis-mesh/trellis/internal/proxy/xdsconfig"
)

// ConnServer serves HTTP on connections a listener has accepted and matched to an HTTP filter
// chain (already past TLS, when the chain terminates it: a *tls.Conn, whose negotiated ALPN says
// h2 or HTTP/1.1). It is the seam where the proxy's own HTTP/1.1 server (package h1) replaces
// net/http: NewConnServer is the one place that builds it.
type ConnServer interface {
	// ServeConn serves c, or closes it when the server is shut down. It may return at once or
	// when c is done: the caller is the connection's own goroutine either way.
	ServeConn(c net.Conn)
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
}

// NewConnServer returns the server for an HTTP chain; handler is what it calls (the chain's
// handler, swappable in place).
func NewConnServer(h HTTPChain, handler http.Handler, connState func(net.Conn, http.ConnState), log *slog.Logger) ConnServer {
	var protocols http.Protocols
	switch h.Codec {
	case xdsconfig.CodecHTTP1:
		protocols.SetHTTP1(true)
	case xdsconfig.CodecHTTP2:
		protocols.SetHTTP2(true)
		protocols.SetUnencryptedHTTP2(true)
	default:
		protocols.SetHTTP1(true)
		protocols.SetHTTP2(true)
		protocols.SetUnencryptedHTTP2(true)
	}
	s := &netHTTPServer{
		ln: newChanListener(),
		srv: &http.Server{
			Handler:        handler,
			IdleTimeout:    h.IdleTimeout,
			MaxHeaderBytes: 60 << 10, // Envoy's max_request_headers_kb default
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
