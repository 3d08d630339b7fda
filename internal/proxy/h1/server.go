package h1

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultMaxHeaderBytes is Envoy's max_request_headers_kb default (60 KiB).
const DefaultMaxHeaderBytes = 60 << 10

// maxRequestLine bounds the request line; past it the answer is 414.
const maxRequestLine = 64 << 10

// Server serves HTTP/1.x (and, unless DisableH2C, HTTP/2 with prior knowledge) to an http.Handler.
// Its fields mirror the http.Server ones of the same name; set them before serving.
//
// Unlike net/http, nothing is allocated per request for the request itself: once the handler has
// returned, the *http.Request, its URL and its Header map are reused for the connection's next
// request. A handler must not let anything use them after it returns; one that hands r.Header to
// something that may (a transport that writes it asynchronously) sets r.Header to nil before it
// returns, and the server then leaves that map alone. Every request of a connection shares one
// context, cancelled when the client is found gone or the connection ends.
type Server struct {
	Handler http.Handler
	// IdleTimeout closes a connection with no request in flight after this long; 0 means never.
	IdleTimeout time.Duration
	// ReadHeaderTimeout bounds reading a request head, from its first byte; 0 means no limit.
	ReadHeaderTimeout time.Duration
	// MaxHeaderBytes bounds a request's header fields (the request line is bounded separately);
	// 0 means DefaultMaxHeaderBytes. Larger heads are answered 431.
	MaxHeaderBytes int
	// ConnState is told about connection state changes, as http.Server reports them.
	ConnState func(net.Conn, http.ConnState)
	// ErrorLog receives handler panics and connection errors; nil discards them.
	ErrorLog *slog.Logger
	// DisableH2C serves HTTP/1 only (Envoy codec_type HTTP1): an HTTP/2 preface is a bad request.
	DisableH2C bool

	mu        sync.Mutex
	listeners map[*net.Listener]struct{}
	conns     map[*conn]struct{}
	closing   atomic.Bool
	// noKeepAlive is set while the listener drains: every response closes its connection.
	noKeepAlive atomic.Bool
	h2once      sync.Once
	h2          *http.Server // serves the HTTP/2 prior-knowledge connections handed to h2ln
	h2ln        *connListener
	h2served    chan struct{}
}

// Serve accepts connections on ln and serves each on its own goroutine. It returns
// http.ErrServerClosed after Shutdown or Close, else the accept error.
func (s *Server) Serve(ln net.Listener) error {
	if !s.trackListener(&ln, true) {
		return http.ErrServerClosed
	}
	defer s.trackListener(&ln, false)
	var delay time.Duration
	for {
		rwc, err := ln.Accept()
		if err != nil {
			if s.closing.Load() {
				return http.ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				// Out of file descriptors and the like: back off as net/http does.
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		c := s.newConn(rwc)
		if c == nil {
			continue
		}
		go c.serve()
	}
}

// ServeConn serves one already accepted connection (after TLS termination or filter chain
// selection elsewhere) and returns when it is done. It takes part in Shutdown and Close.
func (s *Server) ServeConn(rwc net.Conn) {
	if c := s.newConn(rwc); c != nil {
		c.serve()
	}
}

func (s *Server) trackListener(ln *net.Listener, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !add {
		delete(s.listeners, ln)
		return true
	}
	if s.closing.Load() {
		return false
	}
	if s.listeners == nil {
		s.listeners = make(map[*net.Listener]struct{})
	}
	s.listeners[ln] = struct{}{}
	return true
}

func (s *Server) newConn(rwc net.Conn) *conn {
	s.mu.Lock()
	if s.closing.Load() {
		s.mu.Unlock()
		_ = rwc.Close()
		return nil
	}
	c := &conn{srv: s, rwc: rwc}
	if s.conns == nil {
		s.conns = make(map[*conn]struct{})
	}
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	c.setState(http.StateNew)
	return c
}

func (s *Server) forget(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

func (s *Server) maxHeaderBytes() int {
	if s.MaxHeaderBytes > 0 {
		return s.MaxHeaderBytes
	}
	return DefaultMaxHeaderBytes
}

// h2Server returns the server for HTTP/2 prior-knowledge connections: a private http.Server with
// only unencrypted HTTP/2 enabled, fed connections through an in-memory listener. Its Shutdown sends
// GOAWAY on every HTTP/2 connection and waits for their streams, as net/http does for its own.
func (s *Server) h2Server() (*http.Server, *connListener) {
	s.h2once.Do(func() {
		var p http.Protocols
		p.SetUnencryptedHTTP2(true)
		srv := &http.Server{
			Handler:        s.Handler,
			IdleTimeout:    s.IdleTimeout,
			MaxHeaderBytes: s.maxHeaderBytes(),
			Protocols:      &p,
			ConnState: func(nc net.Conn, st http.ConnState) {
				hc, ok := nc.(*h2Conn)
				if !ok {
					return
				}
				switch st {
				case http.StateNew:
					// Reported when the connection was accepted.
				case http.StateClosed, http.StateHijacked:
					close(hc.done)
				default:
					hc.c.setState(st)
				}
			},
		}
		if s.ErrorLog != nil {
			srv.ErrorLog = slog.NewLogLogger(s.ErrorLog.Handler(), slog.LevelDebug)
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		s.h2ln = newConnListener()
		if s.closing.Load() {
			_ = s.h2ln.Close() // too late to start serving: the connection is closed instead
			return
		}
		srv.SetKeepAlivesEnabled(!s.noKeepAlive.Load())
		s.h2, s.h2served = srv, make(chan struct{})
		go func() {
			defer close(s.h2served)
			_ = srv.Serve(s.h2ln)
		}()
	})
	return s.h2, s.h2ln
}

// connListener is a net.Listener that accepts the connections pushed to it.
type connListener struct {
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newConnListener() *connListener {
	return &connListener{conns: make(chan net.Conn), closed: make(chan struct{})}
}

// push hands c to the server; false means it is closed and c was not taken.
func (l *connListener) push(c net.Conn) bool {
	select {
	case l.conns <- c:
		return true
	case <-l.closed:
		return false
	}
}

func (l *connListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *connListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *connListener) Addr() net.Addr { return &net.TCPAddr{} }

// SetKeepAlivesEnabled(false) makes every HTTP/1 response from now on carry Connection: close and
// end its connection, closes idle connections, and sends HTTP/2 connections a GOAWAY after their
// current stream: the graceful drain of Envoy's /drain_listeners. true restores keep-alive.
func (s *Server) SetKeepAlivesEnabled(v bool) {
	s.noKeepAlive.Store(!v)
	s.mu.Lock()
	h2 := s.h2
	s.mu.Unlock()
	if h2 != nil {
		h2.SetKeepAlivesEnabled(v)
	}
	if !v {
		s.closeIdle()
	}
}

// keepAlive reports whether connections may outlive their current request.
func (s *Server) keepAlive() bool { return !s.closing.Load() && !s.noKeepAlive.Load() }

// shutdownPollMax bounds the wait between looks for idle connections during Shutdown.
const shutdownPollMax = 200 * time.Millisecond

// Shutdown stops accepting, closes idle connections, lets requests in flight finish (their
// keep-alive connections are told Connection: close and closed after the response) and sends
// GOAWAY on HTTP/2 connections. It returns when every connection is gone, or ctx's error when ctx
// ends first (connections left then stay open; call Close).
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing.Store(true)
	for ln := range s.listeners {
		_ = (*ln).Close()
	}
	h2 := s.h2
	s.mu.Unlock()
	if h2 != nil {
		// GOAWAY on the HTTP/2 connections; returns when their streams are done.
		if err := h2.Shutdown(ctx); err != nil {
			return err
		}
		<-s.h2served
	}
	wait := time.Millisecond
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		if s.closeIdle() {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-timer.C:
			wait = min(2*wait, shutdownPollMax)
			timer.Reset(wait)
		}
	}
}

// closeIdle closes connections without a request in flight and reports whether none are left.
func (s *Server) closeIdle() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		if c.h2.Load() {
			continue // GOAWAY was sent; the HTTP/2 server closes it once its streams are flushed
		}
		if st := http.ConnState(c.state.Load()); st == http.StateIdle || st == http.StateNew {
			c.closeIdle()
		}
	}
	return len(s.conns) == 0
}

// Close closes every listener and connection now.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closing.Store(true)
	var err error
	for ln := range s.listeners {
		if cerr := (*ln).Close(); cerr != nil && err == nil {
			err = cerr
		}
	}
	for c := range s.conns {
		_ = c.rwc.Close()
	}
	h2 := s.h2
	s.mu.Unlock()
	if h2 != nil {
		_ = h2.Close()
		<-s.h2served
	}
	return err
}

func (s *Server) logf(msg string, args ...any) {
	if s.ErrorLog != nil {
		s.ErrorLog.Debug(msg, args...)
	}
}

// Pools of per-connection buffers: a connection holds them while it lives and returns them when it
// closes (not when hijacked: the hijacker owns them then).
var (
	serverReaders, serverWriters sync.Pool
	clientReaders, clientWriters sync.Pool
)

const (
	serverReadBuf  = 8 << 10
	serverWriteBuf = 8 << 10
)

func getReader(pool *sync.Pool, r io.Reader, size int) *bufio.Reader {
	if v := pool.Get(); v != nil {
		br := v.(*bufio.Reader)
		if br.Size() == size {
			br.Reset(r)
			return br
		}
	}
	return bufio.NewReaderSize(r, size)
}

func putReader(pool *sync.Pool, br *bufio.Reader) {
	br.Reset(nil)
	pool.Put(br)
}

func getWriter(pool *sync.Pool, w io.Writer, size int) *bufio.Writer {
	if v := pool.Get(); v != nil {
		bw := v.(*bufio.Writer)
		if bw.Size() == size {
			bw.Reset(w)
			return bw
		}
	}
	return bufio.NewWriterSize(w, size)
}

func putWriter(pool *sync.Pool, bw *bufio.Writer) {
	bw.Reset(nil)
	pool.Put(bw)
}
