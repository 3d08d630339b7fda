package h1

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// DefaultMaxIdleConnsPerHost is net/http's default.
const DefaultMaxIdleConnsPerHost = 2

// inlineBodyMax is the largest request body of known length written before the response is read;
// longer (or unknown-length) bodies stream from a goroutine while the response is read, so an
// upstream that answers early is heard (full duplex, as Envoy).
const inlineBodyMax = 64 << 10

const (
	// writeWaitBeforeReuse is how long a finished exchange waits for its body writer to report.
	writeWaitBeforeReuse = 50 * time.Millisecond
	clientBuf            = 16 << 10
	max1xx               = 8
)

// Transport is an HTTP/1.1 http.RoundTripper with a keep-alive pool per host (req.URL.Host). A
// round trip runs on the caller's goroutine; only a streaming request body gets a goroutine.
type Transport struct {
	// DialContext opens connections; nil uses a plain net.Dialer. Its errors are returned as they
	// are (wrapped, so errors.As finds them).
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
	// IdleConnTimeout closes a pooled connection idle this long; 0 means never.
	IdleConnTimeout time.Duration
	// MaxIdleConnsPerHost bounds the pool per host; 0 means DefaultMaxIdleConnsPerHost.
	MaxIdleConnsPerHost int
	// MaxResponseHeaderBytes bounds a response head; 0 means DefaultMaxHeaderBytes.
	MaxResponseHeaderBytes int

	mu   sync.Mutex
	idle map[string][]*pconn
}

var (
	errShortBody     = errors.New("h1: request body shorter than its ContentLength")
	errBadStatusLine = errors.New("h1: malformed status line")
	errTooMany1xx    = errors.New("h1: too many 1xx responses")
	errBodyClosed    = errors.New("h1: read on closed response body")
)

// ProtocolError is an upstream answer that is not valid HTTP/1.x (Envoy's upstream protocol
// error, flag UPE), as opposed to a connection that failed or was reset.
type ProtocolError struct{ Err error }

func (e *ProtocolError) Error() string { return "h1: malformed HTTP response: " + e.Err.Error() }

func (e *ProtocolError) Unwrap() error { return e.Err }

// CanceledError is a round trip or body read cut short by its context. It unwraps to ctx.Err().
type CanceledError struct {
	Err   error // the context's error
	Cause error // what the aborted I/O returned
}

func (e *CanceledError) Error() string {
	return "h1: request canceled: " + e.Err.Error()
}

func (e *CanceledError) Unwrap() error { return e.Err }

// RoundTrip sends req and returns the response head; its body reads from the connection.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	return t.RoundTripDeadline(req, time.Time{})
}

// RoundTripDeadline is RoundTrip with a deadline for the whole exchange, connecting and the
// response body included: past it the exchange's I/O fails with an error that wraps
// os.ErrDeadlineExceeded, and the connection is not reused. A zero deadline means none. It costs no
// timer or context per request, unlike a context.WithDeadline on req.
func (t *Transport) RoundTripDeadline(req *http.Request, deadline time.Time) (*http.Response, error) {
	if req.URL == nil {
		closeReqBody(req)
		return nil, errors.New("h1: nil Request.URL")
	}
	if s := req.URL.Scheme; s != "http" && s != "" {
		closeReqBody(req)
		return nil, errors.New("h1: unsupported protocol scheme " + s)
	}
	addr := req.URL.Host
	if addr == "" {
		closeReqBody(req)
		return nil, errors.New("h1: no Host in request URL")
	}
	if strings.LastIndexByte(addr, ':') <= strings.LastIndexByte(addr, ']') {
		addr += ":80"
	}
	ctx := req.Context()
	for retried := false; ; retried = true {
		pc, err := t.getConn(ctx, addr, deadline)
		if err != nil {
			closeReqBody(req)
			if ctx.Err() != nil {
				return nil, &CanceledError{Err: ctx.Err(), Cause: err}
			}
			return nil, err
		}
		resp, err := pc.roundTrip(ctx, req, deadline)
		if err == nil {
			return resp, nil
		}
		if !retried && pc.reused && pc.nothingRead && (pc.writeFailed || idempotent(req)) &&
			ctx.Err() == nil && (deadline.IsZero() || time.Now().Before(deadline)) {
			// The pooled connection was closed by the upstream while idle: try a fresh one, as
			// net/http does. Only when the upstream cannot have acted on the request (it was not
			// fully written) or acting twice is harmless (an idempotent method): a server that
			// dies mid-request must not see a POST again. Retry policies decide the rest.
			if next, ok := rewind(req); ok {
				req = next
				continue
			}
		}
		closeReqBody(req)
		return nil, err
	}
}

// idempotent reports whether sending req twice is harmless (RFC 9110 9.2.2; the idempotency-key
// headers as net/http honours them).
func idempotent(req *http.Request) bool {
	switch req.Method {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	_, ok := req.Header["Idempotency-Key"]
	if !ok {
		_, ok = req.Header["X-Idempotency-Key"]
	}
	return ok
}

func rewind(req *http.Request) (*http.Request, bool) {
	if req.Body == nil || req.Body == http.NoBody {
		return req, true
	}
	if req.GetBody == nil {
		return nil, false
	}
	body, err := req.GetBody()
	if err != nil {
		return nil, false
	}
	next := *req
	next.Body = body
	return &next, true
}

func closeReqBody(req *http.Request) {
	if req.Body != nil {
		_ = req.Body.Close()
	}
}

// CloseIdleConnections closes the pooled connections; those in use close when their exchange ends
// if they are not wanted then.
func (t *Transport) CloseIdleConnections() {
	t.mu.Lock()
	idle := t.idle
	t.idle = nil
	t.mu.Unlock()
	for _, list := range idle {
		for _, pc := range list {
			pc.inIdle = false
			pc.close()
		}
	}
}

func (t *Transport) getConn(ctx context.Context, addr string, deadline time.Time) (*pconn, error) {
	t.mu.Lock()
	for list := t.idle[addr]; len(list) > 0; list = t.idle[addr] {
		pc := list[len(list)-1]
		list[len(list)-1] = nil
		t.idle[addr] = list[:len(list)-1]
		pc.inIdle = false
		if pc.idleTimer != nil && !pc.idleTimer.Stop() {
			continue // expiring: its timer closes it
		}
		t.mu.Unlock()
		if pc.peerClosed() {
			pc.close() // closed while idle: a fresh connection, not a failed request
			t.mu.Lock()
			continue
		}
		pc.reused = true
		return pc, nil
	}
	t.mu.Unlock()
	dial := t.DialContext
	if dial == nil {
		var d net.Dialer
		dial = d.DialContext
	}
	if !deadline.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, deadline)
		defer cancel()
	}
	conn, err := dial(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	pc := &pconn{
		t:         t,
		key:       addr,
		conn:      conn,
		br:        getReader(&clientReaders, conn, clientBuf),
		bw:        getWriter(&clientWriters, conn, clientBuf),
		writeDone: make(chan error, 1),
	}
	pc.onCancel = func() {
		pc.canceled.Store(true)
		_ = pc.conn.Close()
	}
	return pc, nil
}

func (t *Transport) putIdle(pc *pconn) {
	maxIdle := t.MaxIdleConnsPerHost
	if maxIdle <= 0 {
		maxIdle = DefaultMaxIdleConnsPerHost
	}
	t.mu.Lock()
	if len(t.idle[pc.key]) >= maxIdle {
		t.mu.Unlock()
		pc.close()
		return
	}
	if t.idle == nil {
		t.idle = make(map[string][]*pconn)
	}
	t.idle[pc.key] = append(t.idle[pc.key], pc)
	pc.inIdle = true
	if d := t.IdleConnTimeout; d > 0 {
		if pc.idleTimer == nil {
			pc.idleTimer = time.AfterFunc(d, pc.idleExpired)
		} else {
			pc.idleTimer.Reset(d)
		}
	}
	t.mu.Unlock()
}

func (t *Transport) maxHead() int {
	if t.MaxResponseHeaderBytes > 0 {
		return t.MaxResponseHeaderBytes
	}
	return DefaultMaxHeaderBytes
}

// pconn is one upstream connection.
type pconn struct {
	t         *Transport
	key       string
	conn      net.Conn
	br        *bufio.Reader
	bw        *bufio.Writer
	dec       decoder
	head      []byte
	scratch   []byte
	idleTimer *time.Timer
	inIdle    bool // in the pool; guarded by t.mu
	reused    bool
	closed    atomic.Bool

	// Liveness check before reuse (peek.go), bound once per connection so it allocates nothing.
	raw        syscall.RawConn
	peek       func(fd uintptr) bool
	peekBuf    [1]byte
	peekClosed bool

	// The exchange in flight.
	ctx         context.Context
	onCancel    func()
	stopCancel  func() bool
	canceled    atomic.Bool
	nothingRead bool // the response failed before its first byte
	writeFailed bool // the request head or a buffered body failed to write
	keepAlive   bool
	writing     bool // a goroutine streams the request body
	writeDone   chan error
	deadline    bool // the exchange set a deadline on conn
}

func (pc *pconn) idleExpired() {
	t := pc.t
	t.mu.Lock()
	if pc.inIdle {
		list := t.idle[pc.key]
		for i, x := range list {
			if x == pc {
				t.idle[pc.key] = append(list[:i], list[i+1:]...)
				break
			}
		}
		pc.inIdle = false
	}
	t.mu.Unlock()
	pc.close()
}

func (pc *pconn) close() {
	if pc.closed.Swap(true) {
		return
	}
	_ = pc.conn.Close()
	if pc.idleTimer != nil {
		pc.idleTimer.Stop()
	}
	if !pc.writing {
		putReader(&clientReaders, pc.br)
		putWriter(&clientWriters, pc.bw)
	}
}

// roundTrip runs one exchange on pc.
func (pc *pconn) roundTrip(ctx context.Context, req *http.Request, deadline time.Time) (*http.Response, error) {
	pc.nothingRead, pc.writeFailed, pc.keepAlive, pc.writing, pc.stopCancel = false, false, false, false, nil
	pc.ctx = ctx
	pc.deadline = !deadline.IsZero()
	if pc.deadline {
		_ = pc.conn.SetDeadline(deadline)
	}
	if ctx.Done() != nil {
		pc.stopCancel = context.AfterFunc(ctx, pc.onCancel)
	}
	if err := pc.writeRequest(req); err != nil {
		pc.nothingRead, pc.writeFailed = true, true
		pc.abort()
		return nil, pc.ioError(ctx, err)
	}
	resp, err := pc.readResponse(ctx, req)
	if err != nil {
		pc.abort()
		return nil, pc.ioError(ctx, err)
	}
	return resp, nil
}

// abort ends the exchange with the connection closed.
func (pc *pconn) abort() {
	if pc.stopCancel != nil {
		pc.stopCancel()
	}
	pc.close()
}

// release ends the exchange after the response body; the connection goes back to the pool when
// the exchange left it in step.
func (pc *pconn) release() {
	keep := pc.keepAlive && !pc.closed.Load()
	if pc.stopCancel != nil && !pc.stopCancel() {
		keep = false // the context fired and closed it
	}
	if pc.writing && keep {
		// The writer has usually just finished (the upstream answered after reading the body) but
		// may not have said so yet; wait briefly, as net/http does. If the upstream answered
		// before taking the whole body, the connection is out of step: closing it ends the writer.
		timer := time.NewTimer(writeWaitBeforeReuse)
		select {
		case err := <-pc.writeDone:
			pc.writing = false
			keep = err == nil
		case <-timer.C:
			keep = false
		}
		timer.Stop()
	}
	if keep && pc.br.Buffered() > 0 {
		keep = false // unsolicited bytes after the response
	}
	pc.ctx = nil
	if keep && pc.deadline {
		pc.deadline = false
		_ = pc.conn.SetDeadline(time.Time{})
	}
	if !keep {
		pc.close()
		return
	}
	pc.t.putIdle(pc)
}

func (pc *pconn) ioError(ctx context.Context, err error) error {
	if ctx == nil {
		ctx = context.Background()
	}
	if ctx.Err() != nil || pc.canceled.Load() {
		cerr := ctx.Err()
		if cerr == nil {
			cerr = context.Canceled
		}
		return &CanceledError{Err: cerr, Cause: err}
	}
	return err
}
