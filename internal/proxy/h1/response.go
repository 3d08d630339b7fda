package h1

import (
	"bufio"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// bufferBeforeChunking is how much body a handler may write without Content-Length before the
// response is committed as chunked: a handler that finishes within it gets a Content-Length.
const bufferBeforeChunking = 2048

// response is the http.ResponseWriter of a connection, reused across its requests.
type response struct {
	c      *conn
	req    *http.Request
	header http.Header

	status      int
	wroteHeader bool // the status is fixed
	committed   bool // the head is written to the connection's buffer
	handlerDone bool
	isHead      bool
	http10      bool
	reqClose    bool

	contentLength int64 // -1: not declared
	written       int64
	chunked       bool
	closeAfter    bool
	pending       []byte
	pendingLen    int64 // bytes written before commit (for HEAD, counted only)
	werr          error

	canContinue  atomic.Bool
	continueMu   sync.Mutex
	expect       bool // the client asked for 100 Continue
	continueSent bool // guarded by continueMu
}

var (
	_ http.ResponseWriter = (*response)(nil)
	_ http.Flusher        = (*response)(nil)
	_ http.Hijacker       = (*response)(nil)
)

func (w *response) reset(req *http.Request, rh *requestHead) {
	h := w.header
	if h == nil {
		h = make(http.Header)
	} else {
		clear(h)
	}
	*w = response{
		c:             w.c,
		req:           req,
		header:        h,
		isHead:        req.Method == http.MethodHead,
		http10:        rh.minor == 0,
		reqClose:      rh.close,
		contentLength: -1,
		pending:       w.pending[:0],
	}
	w.expect = rh.expectContinue
	w.canContinue.Store(rh.expectContinue)
}

// awaitingContinue reports whether the client may still be holding its body back for a
// 100 Continue that will never come.
func (w *response) awaitingContinue() bool {
	if !w.expect {
		return false
	}
	w.continueMu.Lock()
	defer w.continueMu.Unlock()
	return !w.continueSent
}

func (w *response) Header() http.Header { return w.header }

// writeContinue sends "100 Continue" for a body read, unless the response has begun.
func (w *response) writeContinue() {
	w.continueMu.Lock()
	defer w.continueMu.Unlock()
	if w.canContinue.Load() {
		w.canContinue.Store(false)
		w.continueSent = true
		_, _ = w.c.bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
		_ = w.c.bw.Flush()
	}
}

func (w *response) WriteHeader(code int) {
	if w.c.hijacked || w.wroteHeader {
		return
	}
	if code < 100 || code > 999 {
		panic("h1: invalid WriteHeader code " + strconv.Itoa(code))
	}
	if w.canContinue.Load() {
		w.continueMu.Lock()
		w.canContinue.Store(false)
		w.continueMu.Unlock()
	}
	if code >= 100 && code < 200 && code != http.StatusSwitchingProtocols {
		// Informational: sent now, with the headers set so far (103 Early Hints).
		w.writeStatusLine(code)
		w.writeFields(false)
		_, _ = w.c.bw.WriteString("\r\n")
		w.setErr(w.c.bw.Flush())
		return
	}
	w.wroteHeader = true
	w.status = code
	if cl := w.header["Content-Length"]; len(cl) > 0 {
		if n, ok := parseDecimal(strings.TrimSpace(cl[0])); ok {
			w.contentLength = n
		} else {
			delete(w.header, "Content-Length")
		}
	}
	if w.contentLength >= 0 || !bodyAllowed(code) {
		w.commit()
	}
}

func bodyAllowed(code int) bool {
	return !(code >= 100 && code < 200) && code != http.StatusNoContent && code != http.StatusNotModified
}

func (w *response) Write(p []byte) (int, error) {
	if w.c.hijacked {
		return 0, http.ErrHijacked
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !bodyAllowed(w.status) {
		return 0, http.ErrBodyNotAllowed
	}
	if !w.committed {
		if w.pendingLen+int64(len(p)) <= bufferBeforeChunking && !w.hasTrailers() {
			w.pendingLen += int64(len(p))
			if !w.isHead {
				w.pending = append(w.pending, p...)
			}
			return len(p), nil
		}
		w.commit()
	}
	return w.writeBody(p)
}

func (w *response) WriteString(s string) (int, error) {
	// Small strings go through the pending buffer without a copy to []byte.
	if w.committed || !w.wroteHeader || len(s) > 256 {
		return w.Write([]byte(s))
	}
	if !bodyAllowed(w.status) {
		return 0, http.ErrBodyNotAllowed
	}
	if w.pendingLen+int64(len(s)) <= bufferBeforeChunking && !w.hasTrailers() {
		w.pendingLen += int64(len(s))
		if !w.isHead {
			w.pending = append(w.pending, s...)
		}
		return len(s), nil
	}
	return w.Write([]byte(s))
}

func (w *response) writeBody(p []byte) (int, error) {
	if w.werr != nil {
		return 0, w.werr
	}
	if w.isHead || len(p) == 0 {
		return len(p), nil
	}
	if w.contentLength >= 0 && w.written+int64(len(p)) > w.contentLength {
		return 0, http.ErrContentLength
	}
	w.written += int64(len(p))
	bw := w.c.bw
	if w.chunked {
		writeChunkHeader(bw, len(p))
		_, _ = bw.Write(p)
		_, err := bw.WriteString("\r\n")
		w.setErr(err)
	} else {
		_, err := bw.Write(p)
		w.setErr(err)
	}
	if w.werr != nil {
		return 0, w.werr
	}
	return len(p), nil
}

func writeChunkHeader(bw *bufio.Writer, n int) {
	var b [18]byte
	i := len(b) - 2
	b[i], b[i+1] = '\r', '\n'
	for {
		i--
		b[i] = hexDigits[n&0xf]
		n >>= 4
		if n == 0 {
			break
		}
	}
	_, _ = bw.Write(b[i:])
}

const hexDigits = "0123456789abcdef"

func (w *response) setErr(err error) {
	if err != nil && w.werr == nil {
		w.werr = err
	}
}

func (w *response) hasTrailers() bool {
	if len(w.header["Trailer"]) > 0 {
		return true
	}
	for k := range w.header {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			return true
		}
	}
	return false
}

// commit decides the framing and writes the head. Until then a handler's body may sit in pending.
func (w *response) commit() {
	if w.committed {
		return
	}
	w.committed = true
	s := w.c.srv
	if se, ok := w.c.dec.err.(*statusError); ok {
		// The request body was malformed before the handler answered: answer for the codec.
		w.codecError(se)
	}
	h := w.header
	allowed := bodyAllowed(w.status)

	if conn := h["Connection"]; len(conn) > 0 && hasToken(conn, "close") {
		w.closeAfter = true
	}
	if w.reqClose || !s.keepAlive() || w.awaitingContinue() {
		w.closeAfter = true
	}
	if w.status == http.StatusSwitchingProtocols {
		// The handler hijacks next: no framing of ours.
	} else if !allowed {
		if w.status != http.StatusNotModified {
			delete(h, "Content-Length")
		}
	} else if w.contentLength < 0 && !w.isHead && w.handlerDone && !w.hasTrailers() {
		w.contentLength = w.pendingLen
	} else if w.contentLength < 0 && w.isHead && w.handlerDone && w.pendingLen > 0 {
		w.contentLength = w.pendingLen
	} else if w.contentLength < 0 && !w.isHead {
		if w.http10 {
			w.closeAfter = true // delimited by the close
		} else {
			w.chunked = true
		}
	}
	if b := w.c.dec; allowed && !b.done && b.kind == bodyFixed && b.remaining > maxDiscard {
		// Too much request body left to read away afterwards: say now that we will close.
		w.closeAfter = true
	}

	w.writeStatusLine(w.status)
	w.writeFields(true)
	bw := w.c.bw
	if w.status != http.StatusSwitchingProtocols && (allowed || w.status == http.StatusNotModified) {
		if w.contentLength >= 0 && len(h["Content-Length"]) == 0 && allowed {
			_, _ = bw.WriteString("Content-Length: ")
			writeInt(bw, w.contentLength)
			_, _ = bw.WriteString("\r\n")
		}
	}
	if w.chunked {
		_, _ = bw.WriteString("Transfer-Encoding: chunked\r\n")
	}
	if len(h["Date"]) == 0 {
		_, _ = bw.Write(dateField())
	}
	switch {
	case w.closeAfter && w.status != http.StatusSwitchingProtocols:
		_, _ = bw.WriteString("Connection: close\r\n")
	case w.http10 && !w.closeAfter:
		_, _ = bw.WriteString("Connection: keep-alive\r\n")
	}
	_, err := bw.WriteString("\r\n")
	w.setErr(err)

	if len(w.pending) > 0 {
		p := w.pending
		w.pending = w.pending[:0]
		_, _ = w.writeBody(p)
	} else if w.isHead {
		w.written = w.pendingLen
	}
}

// codecError replaces the handler's response with the codec's error reply.
func (w *response) codecError(se *statusError) {
	clear(w.header)
	text := http.StatusText(se.status)
	w.status = se.status
	w.header["Content-Type"] = []string{"text/plain; charset=utf-8"}
	w.isHead = false
	w.closeAfter = true
	w.reqClose = true
	w.contentLength = int64(len(text))
	w.pending = append(w.pending[:0], text...)
	w.pendingLen = w.contentLength
}

func writeInt(bw *bufio.Writer, n int64) {
	var b [20]byte
	_, _ = bw.Write(strconv.AppendInt(b[:0], n, 10))
}

func (w *response) writeStatusLine(code int) {
	bw := w.c.bw
	if code < len(statusLines) && statusLines[code] != "" {
		line := statusLines[code]
		_, _ = bw.WriteString(line)
		return
	}
	_, _ = bw.WriteString("HTTP/1.1 ")
	writeInt(bw, int64(code))
	_ = bw.WriteByte(' ')
	_, _ = bw.WriteString(http.StatusText(code))
	_, _ = bw.WriteString("\r\n")
}

var statusLines = func() (m [600]string) {
	for code := 100; code < 600; code++ {
		if t := http.StatusText(code); t != "" {
			m[code] = "HTTP/1.1 " + strconv.Itoa(code) + " " + t + "\r\n"
		}
	}
	return m
}()

// writeFields writes the handler's header fields, leaving out those the codec owns. Invalid names
// are dropped and line breaks in values become spaces, so a handler cannot split the response.
func (w *response) writeFields(final bool) {
	bw := w.c.bw
	for k, vs := range w.header {
		switch k {
		case "Transfer-Encoding":
			continue
		case "Connection", "Keep-Alive":
			if w.status != http.StatusSwitchingProtocols {
				continue
			}
		case "Content-Length":
			if !final || !bodyAllowed(w.status) && w.status != http.StatusNotModified {
				continue
			}
		}
		if strings.HasPrefix(k, http.TrailerPrefix) || !validToken(k) {
			continue
		}
		for _, v := range vs {
			writeField(bw, k, v)
		}
	}
}

func writeField(bw *bufio.Writer, k, v string) {
	_, _ = bw.WriteString(k)
	_, _ = bw.WriteString(": ")
	if strings.ContainsAny(v, "\r\n\x00") {
		for i := 0; i < len(v); i++ {
			c := v[i]
			if c == '\r' || c == '\n' || c == 0 {
				c = ' '
			}
			_ = bw.WriteByte(c)
		}
	} else {
		_, _ = bw.WriteString(v)
	}
	_, _ = bw.WriteString("\r\n")
}

// finish completes the response after the handler returned and reports whether the connection
// may be kept.
func (w *response) finish() bool {
	w.handlerDone = true
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	w.commit()
	bw := w.c.bw
	if w.chunked {
		_, _ = bw.WriteString("0\r\n")
		w.writeTrailers()
		_, _ = bw.WriteString("\r\n")
	}
	if w.contentLength >= 0 && w.written < w.contentLength && bodyAllowed(w.status) && !w.isHead {
		// Short of the declared length: only closing tells the client.
		w.closeAfter = true
	}
	w.setErr(bw.Flush())
	return !w.closeAfter && w.werr == nil
}

func (w *response) writeTrailers() {
	bw := w.c.bw
	for _, decl := range w.header["Trailer"] {
		for decl != "" {
			var k string
			k, decl, _ = strings.Cut(decl, ",")
			k = http.CanonicalHeaderKey(trimOWS(k))
			if !validToken(k) {
				continue
			}
			for _, v := range w.header[k] {
				writeField(bw, k, v)
			}
		}
	}
	for k, vs := range w.header {
		if name, ok := strings.CutPrefix(k, http.TrailerPrefix); ok && validToken(name) {
			for _, v := range vs {
				writeField(bw, name, v)
			}
		}
	}
}

// Flush sends what the handler wrote so far.
func (w *response) Flush() { _ = w.FlushError() }

// FlushError is Flush with the write error, for http.ResponseController.
func (w *response) FlushError() error {
	if w.c.hijacked {
		return http.ErrHijacked
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	w.commit()
	w.setErr(w.c.bw.Flush())
	return w.werr
}

// EnableFullDuplex lets the handler read the request body while writing the response: always
// possible here.
func (w *response) EnableFullDuplex() error { return nil }

// SetReadDeadline and SetWriteDeadline serve http.ResponseController.
func (w *response) SetReadDeadline(t time.Time) error { return w.c.rwc.SetReadDeadline(t) }

func (w *response) SetWriteDeadline(t time.Time) error { return w.c.rwc.SetWriteDeadline(t) }

// Hijack hands the connection to the handler, with what is buffered either way. A status the
// handler set (101 Switching Protocols) is sent first.
func (w *response) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c := w.c
	if c.hijacked {
		return nil, nil, http.ErrHijacked
	}
	if w.wroteHeader && !w.committed {
		w.commit()
	}
	if err := c.bw.Flush(); err != nil {
		return nil, nil, err
	}
	c.cr.stop()
	c.hijacked = true
	c.setState(http.StateHijacked)
	_ = c.rwc.SetDeadline(time.Time{})
	// The reader still reads through connReader: the byte it may hold goes to the hijacker.
	return &hijackedConn{Conn: c.rwc, cr: &c.cr}, bufio.NewReadWriter(c.br, c.bw), nil
}

// hijackedConn returns a byte the background read took before reading the socket.
type hijackedConn struct {
	net.Conn
	cr *connReader
}

func (h *hijackedConn) Read(p []byte) (int, error) {
	h.cr.mu.Lock()
	if h.cr.pr < h.cr.pw && len(p) > 0 {
		n := h.cr.takePending(p)
		h.cr.mu.Unlock()
		return n, nil
	}
	h.cr.mu.Unlock()
	return h.Conn.Read(p)
}

// dateField is the Date header line, formatted once a second.
func dateField() []byte {
	now := time.Now()
	sec := now.Unix()
	if d := cachedDate.Load(); d != nil && d.sec == sec {
		return d.line
	}
	d := &dateLine{sec: sec}
	d.line = append(d.line, "Date: "...)
	d.line = now.UTC().AppendFormat(d.line, http.TimeFormat)
	d.line = append(d.line, "\r\n"...)
	cachedDate.Store(d)
	return d.line
}

type dateLine struct {
	sec  int64
	line []byte
}

var cachedDate atomic.Pointer[dateLine]
