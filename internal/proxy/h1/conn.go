package h1

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// maxDiscard is how much unread request body the server reads away after the handler returns to
// keep the connection; past it the connection is closed (net/http's limit).
const maxDiscard = 256 << 10

// aLongTimeAgo is a deadline that makes blocked reads return now.
var aLongTimeAgo = time.Unix(1, 0)

// conn is one downstream connection. Its state lives across the keep-alive requests it carries.
type conn struct {
	srv        *Server
	rwc        net.Conn
	remoteAddr string
	// ctx is every request's context: one per connection, cancelled when the connection is found
	// gone (the background read fails) or ends. A request's own end is its handler returning.
	ctx    context.Context
	cancel context.CancelFunc
	state  atomic.Int32
	h2     atomic.Bool // handed to the HTTP/2 server

	cr connReader
	br *bufio.Reader
	bw *bufio.Writer

	head, scratch []byte
	rh            requestHead
	dec           decoder
	w             response
	// req, url, hdr and vals are reused by every request of the connection once its handler has
	// returned (see Server). blank is the zero request carrying ctx, copied over req to reset it.
	req   *http.Request
	blank http.Request
	url   url.URL
	hdr   http.Header
	vals  []string

	hijacked bool
	graceful bool // close with a write shutdown and a short drain, so the client reads our last reply
}

func (c *conn) setState(st http.ConnState) {
	c.state.Store(int32(st))
	if f := c.srv.ConnState; f != nil {
		f(c.rwc, st)
	}
}

// closeIdle closes a connection Shutdown found idle; its goroutine sees the error and ends.
func (c *conn) closeIdle() { _ = c.rwc.Close() }

func (c *conn) serve() {
	s := c.srv
	c.remoteAddr = c.rwc.RemoteAddr().String()
	c.ctx, c.cancel = context.WithCancel(context.WithValue(context.Background(), http.LocalAddrContextKey, c.rwc.LocalAddr()))
	c.blank = *(&http.Request{}).WithContext(c.ctx)
	if tc, ok := c.rwc.(*tls.Conn); ok {
		// One state per connection (the handshake is done): every request shares it, as net/http.
		st := tc.ConnectionState()
		c.blank.TLS = &st
	}
	c.req = new(http.Request)
	c.cr.init(c)
	c.br = getReader(&serverReaders, &c.cr, serverReadBuf)
	c.bw = getWriter(&serverWriters, c.rwc, serverWriteBuf)
	c.w.c = c
	defer c.end()
	for first := true; ; first = false {
		if !c.awaitRequest(first) {
			return
		}
		if first && !s.DisableH2C && c.isH2Preface() {
			c.serveH2()
			return
		}
		if !c.serveRequest() || c.hijacked {
			return
		}
	}
}

func (c *conn) end() {
	c.cancel()
	if c.hijacked {
		c.srv.forget(c)
		return
	}
	c.cr.stop()
	if c.graceful {
		closeGracefully(c.rwc)
	} else {
		_ = c.rwc.Close()
	}
	if !c.h2.Load() {
		// The HTTP/2 server's frame reader may still be inside c.br when it reports the connection
		// closed: only a connection served here gives its reader back to the pool.
		putReader(&serverReaders, c.br)
	}
	putWriter(&serverWriters, c.bw)
	c.setState(http.StateClosed)
	c.srv.forget(c)
}

// closeGracefully shuts the write side and reads briefly before closing: closing a socket with
// unread input sends a reset, which can destroy the reply the client has not read yet.
func closeGracefully(rwc net.Conn) {
	if cw, ok := rwc.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
		_ = rwc.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		_, _ = io.CopyN(io.Discard, rwc, maxDiscard)
	}
	_ = rwc.Close()
}

// awaitRequest waits for the first byte of the next request under the idle timeout.
func (c *conn) awaitRequest(first bool) bool {
	s := c.srv
	if c.br.Buffered() == 0 && !c.cr.pending() {
		if !first {
			c.setState(http.StateIdle)
			if !s.keepAlive() {
				return false
			}
		}
		if s.IdleTimeout > 0 {
			_ = c.rwc.SetReadDeadline(time.Now().Add(s.IdleTimeout))
		}
		// The background read left pending by the last request usually brings the next one.
		c.cr.awaitBackgroundRead()
		if _, err := c.br.Peek(1); err != nil {
			return false
		}
		if s.ReadHeaderTimeout <= 0 && s.IdleTimeout > 0 {
			_ = c.rwc.SetReadDeadline(time.Time{})
		}
	}
	c.setState(http.StateActive)
	return true
}

const h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// isH2Preface reports whether the connection starts with the HTTP/2 client preface, reading no
// further than needed to tell.
func (c *conn) isH2Preface() bool {
	for n := 1; n <= len(h2Preface); n++ {
		b, err := c.br.Peek(max(n, min(c.br.Buffered(), len(h2Preface))))
		if err != nil && len(b) < n {
			return false
		}
		for i := n - 1; i < len(b); i++ {
			if b[i] != h2Preface[i] {
				return false
			}
		}
		if len(b) == len(h2Preface) {
			return true
		}
		n = len(b)
	}
	return true
}

// h2Conn hands a connection to the HTTP/2 server with the bytes already buffered in front.
type h2Conn struct {
	net.Conn
	r    *bufio.Reader
	c    *conn
	done chan struct{} // closed when the HTTP/2 server is finished with it
}

func (h *h2Conn) Read(p []byte) (int, error) { return h.r.Read(p) }

func (c *conn) serveH2() {
	_, ln := c.srv.h2Server()
	c.h2.Store(true)
	_ = c.rwc.SetReadDeadline(time.Time{})
	hc := &h2Conn{Conn: c.rwc, r: c.br, c: c, done: make(chan struct{})}
	if ln.push(hc) {
		<-hc.done
	}
}

// serveRequest reads, handles and answers one request. It reports whether the connection may
// carry another.
func (c *conn) serveRequest() bool {
	s := c.srv
	if s.ReadHeaderTimeout > 0 {
		_ = c.rwc.SetReadDeadline(time.Now().Add(s.ReadHeaderTimeout))
	}
	// A request starts with a method token or an empty line. A first byte that starts neither,
	// such as the 0x16 of a TLS ClientHello sent to a plaintext port, is refused at once, as
	// Envoy's parser does, rather than waiting for a line that never comes.
	if b, err := c.br.Peek(1); err == nil && !tchar[b[0]] && b[0] != '\r' && b[0] != '\n' {
		c.replyError(errMethod)
		return false
	}
	head, err := readHead(c.br, c.head, maxRequestLine, s.maxHeaderBytes(), false)
	c.head = head[:0]
	if err == nil {
		if c.hdr == nil {
			c.hdr = make(http.Header)
		}
		clear(c.hdr)
		c.vals = c.vals[:0]
		err = parseRequestHead(string(head), &c.rh, &c.scratch, c.hdr, &c.vals, &c.url)
	}
	if err != nil {
		c.replyError(err)
		return false
	}
	if s.ReadHeaderTimeout > 0 {
		_ = c.rwc.SetReadDeadline(time.Time{})
	}

	rh := &c.rh
	req := c.req
	*req = c.blank
	req.Method = rh.method
	req.URL = rh.url
	req.Proto = rh.proto
	req.ProtoMajor, req.ProtoMinor = rh.major, rh.minor
	req.Header = rh.header
	req.Body = http.NoBody
	req.ContentLength = rh.contentLength
	req.Close = rh.close
	req.Host = rh.host
	req.Trailer = rh.trailer
	req.RemoteAddr = c.remoteAddr
	req.RequestURI = rh.target
	var body *reqBody
	c.dec.reset(c.br, rh.kind, rh.contentLength)
	if rh.kind != bodyNone {
		body = &reqBody{c: c}
		req.Body = body
		if rh.kind == bodyChunked {
			req.TransferEncoding = chunkedTE()
		}
	}
	c.dec.trailerDst = &req.Trailer
	c.w.reset(req, rh)
	if body == nil {
		c.cr.startBackgroundRead()
	}

	aborted := c.runHandler(req)
	if req.Header == nil {
		// The handler kept the header map (something still reads it): let it have it.
		c.hdr, c.vals = nil, nil
	}
	// The background read stays pending: it watches for the client going away until the next
	// request arrives, and then brings its first bytes.
	if aborted {
		// The response must not look complete: send what was committed and cut the connection.
		if c.w.committed {
			_ = c.bw.Flush()
		}
		c.releaseBody(body)
		return false
	}
	if c.hijacked {
		return false
	}
	keep := c.w.finish()
	if !c.releaseBody(body) {
		keep = false
	}
	if !keep {
		c.graceful = true
	}
	return keep && c.w.werr == nil
}

func chunkedTE() []string { return []string{"chunked"} }

// releaseBody takes the request body back from the handler and reads away what it left, within
// maxDiscard. It reports whether the connection is still in step with the client.
func (c *conn) releaseBody(body *reqBody) bool {
	if body == nil {
		return true
	}
	body.closed.Store(true)
	if !body.mu.TryLock() {
		// Someone (a transport streaming it upstream) is blocked reading it: cut the connection
		// under them, and wait until they let go before the reader is reused.
		_ = c.rwc.Close()
		body.mu.Lock()
	}
	defer body.mu.Unlock()
	if c.dec.done {
		return true
	}
	if c.dec.err != nil || c.w.awaitingContinue() {
		// The client may still be waiting for 100 Continue before it sends the body.
		return false
	}
	_, _ = io.CopyN(io.Discard, &c.dec, maxDiscard)
	return c.dec.done
}

func (c *conn) runHandler(req *http.Request) (aborted bool) {
	defer func() {
		if v := recover(); v != nil {
			aborted = true
			if v != http.ErrAbortHandler {
				c.srv.logf("h1: panic serving request", "remote", c.remoteAddr, "panic", v, "stack", string(debug.Stack()))
			}
		}
	}()
	h := c.srv.Handler
	if h == nil {
		h = http.NotFoundHandler()
	}
	h.ServeHTTP(&c.w, req)
	return false
}

// replyError answers a request that could not be parsed, then the connection closes. I/O errors
// and timeouts close it without a reply.
func (c *conn) replyError(err error) {
	var se *statusError
	if !errors.As(err, &se) {
		c.srv.logf("h1: reading request", "remote", c.remoteAddr, "error", err)
		return
	}
	c.srv.logf("h1: bad request", "remote", c.remoteAddr, "error", err)
	text := http.StatusText(se.status)
	bw := c.bw
	_, _ = bw.WriteString("HTTP/1.1 ")
	_, _ = bw.WriteString(strconv.Itoa(se.status))
	_ = bw.WriteByte(' ')
	_, _ = bw.WriteString(text)
	_, _ = bw.WriteString("\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\nContent-Length: ")
	_, _ = bw.WriteString(strconv.Itoa(len(text)))
	_, _ = bw.WriteString("\r\n\r\n")
	_, _ = bw.WriteString(text)
	_ = bw.Flush()
	c.graceful = true
}

// reqBody is the handler's view of the request body. Once the handler returns it reads nothing,
// so a reference kept past that cannot disturb the next request on the connection.
type reqBody struct {
	mu     sync.Mutex
	c      *conn
	closed atomic.Bool
	sawEOF bool
}

func (b *reqBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed.Load() {
		return 0, http.ErrBodyReadAfterClose
	}
	c := b.c
	if c.w.canContinue.Load() {
		c.w.writeContinue()
	}
	n, err := c.dec.Read(p)
	if err == io.EOF && !b.sawEOF {
		b.sawEOF = true
		c.cr.startBackgroundRead()
	}
	return n, err
}

// Close stops further reads; what is left is read away (or the connection closed) when the
// handler returns.
func (b *reqBody) Close() error {
	b.closed.Store(true)
	return nil
}

// connReader reads from the connection for the bufio reader and, while a handler runs with the
// request fully read, keeps one read pending in the background to notice the client going away
// (and cancel the request's context). The background read is one goroutine per connection,
// started the first time it is needed and parked between requests.
type connReader struct {
	c       *conn
	mu      sync.Mutex
	cond    sync.Cond
	inRead  bool
	aborted bool
	dead    bool
	kick    chan struct{}
	// buf[pr:pw] are bytes the background read took, handed out before the socket is read again.
	// Big enough for most request heads, so that the background read brings the whole next one.
	buf    [1024]byte
	pr, pw int
}

func (cr *connReader) init(c *conn) {
	cr.c = c
	cr.cond.L = &cr.mu
}

// pending reports whether bytes of the next request were read in the background.
func (cr *connReader) pending() bool {
	cr.mu.Lock()
	defer cr.mu.Unlock()
	return cr.pr < cr.pw
}

// takePending copies bytes the background read took into p. Call with mu held.
func (cr *connReader) takePending(p []byte) int {
	n := copy(p, cr.buf[cr.pr:cr.pw])
	cr.pr += n
	return n
}

// awaitBackgroundRead waits until a background read in flight has finished.
func (cr *connReader) awaitBackgroundRead() {
	cr.mu.Lock()
	for cr.inRead {
		cr.cond.Wait()
	}
	cr.mu.Unlock()
}

func (cr *connReader) Read(p []byte) (int, error) {
	cr.mu.Lock()
	if cr.inRead {
		cr.mu.Unlock()
		return 0, errors.New("h1: concurrent read on connection")
	}
	if cr.pr < cr.pw && len(p) > 0 {
		n := cr.takePending(p)
		cr.mu.Unlock()
		return n, nil
	}
	if cr.dead {
		cr.mu.Unlock()
		return 0, io.EOF
	}
	cr.inRead = true
	cr.mu.Unlock()
	n, err := cr.c.rwc.Read(p)
	cr.mu.Lock()
	cr.inRead = false
	if err != nil {
		cr.died()
	}
	cr.mu.Unlock()
	cr.cond.Broadcast()
	return n, err
}

// died cancels the request in flight; the connection is gone. Call with mu held.
func (cr *connReader) died() { cr.c.cancel() }

func (cr *connReader) startBackgroundRead() {
	cr.mu.Lock()
	defer cr.mu.Unlock()
	if cr.inRead || cr.pr < cr.pw || cr.dead {
		return
	}
	cr.inRead = true
	if cr.kick == nil {
		cr.kick = make(chan struct{}, 1)
		go cr.watch(cr.kick)
	}
	cr.kick <- struct{}{}
}

func (cr *connReader) watch(kick chan struct{}) {
	for range kick {
		n, err := cr.c.rwc.Read(cr.buf[:])
		cr.mu.Lock()
		cr.pr, cr.pw = 0, max(n, 0)
		if err != nil && !(cr.aborted && isTimeout(err)) {
			cr.dead = true
			cr.died()
		}
		cr.aborted = false
		cr.inRead = false
		cr.mu.Unlock()
		cr.cond.Broadcast()
	}
}

// isTimeout reports whether err is a deadline's. Out of line: the net.Error it looks through
// would otherwise escape, an allocation per read.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// abortPendingRead stops a background read and waits for it to end.
func (cr *connReader) abortPendingRead() {
	cr.mu.Lock()
	if !cr.inRead || cr.kick == nil {
		cr.mu.Unlock()
		return
	}
	cr.aborted = true
	_ = cr.c.rwc.SetReadDeadline(aLongTimeAgo)
	for cr.inRead {
		cr.cond.Wait()
	}
	cr.mu.Unlock()
	_ = cr.c.rwc.SetReadDeadline(time.Time{})
}

// stop ends the background reader goroutine.
func (cr *connReader) stop() {
	cr.abortPendingRead()
	cr.mu.Lock()
	if cr.kick != nil {
		close(cr.kick)
		cr.kick = nil
	}
	cr.mu.Unlock()
}
