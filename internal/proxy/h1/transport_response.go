package h1

import (
	"context"
	"errors"
	"io"
	"net/http"
	"sync"
)

// The response side of Transport: reading and parsing the status line and headers, and the body
// readers that hand a keep-alive connection back to the pool at EOF.

func (pc *pconn) readResponse(ctx context.Context, req *http.Request) (*http.Response, error) {
	maxHead := pc.t.maxHead()
	for n1xx := 0; ; n1xx++ {
		head, err := readHead(pc.br, pc.head, maxHead, maxHead, false)
		pc.head = head[:0]
		if err != nil {
			if len(head) == 0 && pc.br.Buffered() == 0 {
				pc.nothingRead = true
			}
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			var se *statusError
			if errors.As(err, &se) {
				err = &ProtocolError{Err: err}
			}
			return nil, err
		}
		resp, err := pc.parseResponse(string(head), req)
		if err != nil {
			return nil, &ProtocolError{Err: err}
		}
		if resp.StatusCode >= 100 && resp.StatusCode < 200 && resp.StatusCode != http.StatusSwitchingProtocols {
			if n1xx >= max1xx {
				return nil, &ProtocolError{Err: errTooMany1xx}
			}
			continue
		}
		return resp, nil
	}
}

func (pc *pconn) parseResponse(s string, req *http.Request) (*http.Response, error) {
	line, rest, err := nextLine(s)
	if err != nil {
		return nil, err
	}
	if len(line) < 12 || line[8] != ' ' || (len(line) > 12 && line[12] != ' ') {
		return nil, errBadStatusLine
	}
	major, minor, ok := parseVersion(line[:8])
	if !ok || major != 1 {
		return nil, errBadStatusLine
	}
	code := 0
	for i := 9; i < 12; i++ {
		c := line[i]
		if c < '0' || c > '9' {
			return nil, errBadStatusLine
		}
		code = code*10 + int(c-'0')
	}
	if code < 100 {
		return nil, errBadStatusLine
	}
	n := countLines(rest)
	h := make(http.Header, n)
	// One allocation holds the response, its body reader and (for up to respVals fields) the
	// backing store of the header values.
	ex := new(respExchange)
	vals := ex.vals[:0]
	if n > len(ex.vals) {
		vals = make([]string, 0, n)
	}
	if err := parseFields(rest, h, vals, &pc.scratch); err != nil {
		return nil, err
	}
	if code >= 100 && code < 200 && code != http.StatusSwitchingProtocols {
		return &http.Response{StatusCode: code}, nil
	}
	resp := &ex.resp
	*resp = http.Response{
		Status:     line[9:],
		StatusCode: code,
		Proto:      line[:8],
		ProtoMajor: major,
		ProtoMinor: minor,
		Header:     h,
		Request:    req,
	}
	conn := h["Connection"]
	if minor == 0 {
		resp.Close = !hasToken(conn, "keep-alive")
	} else {
		resp.Close = hasToken(conn, "close")
	}

	if code == http.StatusSwitchingProtocols {
		resp.Close = true
		resp.ContentLength = -1
		resp.Body = &upgradedBody{pc: pc}
		if pc.stopCancel != nil {
			pc.stopCancel()
		}
		if pc.writing {
			// A request body still streaming makes an upgrade meaningless; refuse it.
			return nil, errors.New("h1: 101 Switching Protocols while the request body streams")
		}
		return resp, nil
	}

	noBody := req.Method == http.MethodHead || code == http.StatusNoContent || code == http.StatusNotModified
	te, hasTE := h["Transfer-Encoding"]
	cl, hasCL := h["Content-Length"]
	kind, length := bodyToEOF, int64(-1)
	switch {
	case hasTE && hasCL:
		return nil, errSmuggle
	case hasTE:
		if err := parseTransferEncoding(te); err != nil {
			return nil, err
		}
		delete(h, "Transfer-Encoding")
		resp.TransferEncoding = chunkedTE()
		kind = bodyChunked
		if resp.Trailer, err = declaredTrailers(h["Trailer"]); err != nil {
			return nil, err
		}
		if resp.Trailer != nil {
			delete(h, "Trailer")
		}
	case hasCL:
		if length, err = parseContentLength(cl); err != nil {
			return nil, err
		}
		kind = bodyFixed
		if len(cl) > 1 {
			h["Content-Length"] = cl[:1]
		}
	}
	switch {
	case noBody:
		// net/http: a HEAD response reports the Content-Length it announces; 204 and 304 none.
		kind = bodyNone
		if req.Method != http.MethodHead {
			length = 0
		}
	case kind == bodyToEOF:
		resp.Close = true
	case kind == bodyFixed && length == 0:
		kind = bodyNone
	}
	resp.ContentLength = length
	if kind == bodyChunked {
		resp.ContentLength = -1
	}
	pc.keepAlive = pc.keepAlive && !resp.Close
	if kind == bodyNone {
		resp.Body = http.NoBody
		pc.release()
		return resp, nil
	}
	pc.dec.reset(pc.br, kind, length)
	rb := &ex.body
	rb.pc = pc
	if kind == bodyChunked {
		pc.dec.trailerDst = &resp.Trailer
	}
	resp.Body = rb
	return resp, nil
}

// respVals is how many response header fields an exchange holds the values of without another
// allocation.
const respVals = 12

// respExchange is what one response needs, allocated together.
type respExchange struct {
	resp http.Response
	body respBody
	vals [respVals]string
}

// respBody reads a response body from its connection and gives the connection back at EOF.
type respBody struct {
	mu     sync.Mutex
	pc     *pconn
	done   bool // the exchange is over; pc is no longer ours
	closed bool
	err    error
}

func (b *respBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return 0, errBodyClosed
	}
	if b.done {
		return 0, b.err
	}
	pc := b.pc
	n, err := pc.dec.Read(p)
	if err == io.EOF {
		b.done, b.err = true, io.EOF
		pc.release()
	} else if err != nil {
		err = pc.ioError(pc.ctx, err)
		b.done, b.err = true, err
		pc.abort()
	}
	return n, err
}

// Close ends the body. Unread bytes already buffered are skipped to keep the connection; anything
// more closes it.
func (b *respBody) Close() error {
	if !b.mu.TryLock() {
		// A read is blocked in another goroutine: cut the connection under it.
		_ = b.pc.conn.Close()
		b.mu.Lock()
	}
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	if b.done {
		return nil
	}
	b.done = true
	pc := b.pc
	d := &pc.dec
	if d.kind == bodyFixed && d.err == nil && d.remaining <= int64(pc.br.Buffered()) {
		if _, err := io.Copy(io.Discard, d); err == nil && d.done {
			pc.release()
			return nil
		}
	}
	pc.abort()
	return nil
}

// upgradedBody is a 101 response's body: the connection itself, both ways.
type upgradedBody struct {
	pc *pconn
}

func (u *upgradedBody) Read(p []byte) (int, error) { return u.pc.br.Read(p) }

func (u *upgradedBody) Write(p []byte) (int, error) { return u.pc.conn.Write(p) }

func (u *upgradedBody) Close() error {
	u.pc.writing = true // the hijacker may still use the buffers; leave them to the GC
	u.pc.close()
	return nil
}
