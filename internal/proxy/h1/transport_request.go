package h1

import (
	"bufio"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
)

// The transport's request side: the head and body written to the upstream.

var (
	errBadMethod = errors.New("h1: invalid request method")
	errBadURI    = errors.New("h1: invalid request URI")
	errBadHost   = errors.New("h1: invalid Host")
	errBadHeader = errors.New("h1: invalid request header field")
)

func (pc *pconn) writeRequest(req *http.Request) error {
	bw := pc.bw
	method := req.Method
	if method == "" {
		method = http.MethodGet
	}
	if !validToken(method) {
		return errBadMethod
	}
	uri := req.URL.Opaque
	if uri == "" || strings.HasPrefix(uri, "//") || req.URL.RawQuery != "" || req.URL.ForceQuery {
		uri = req.URL.RequestURI()
	}
	if !validTarget(uri) {
		return errBadURI
	}
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	if !validHost(host) {
		return errBadHost
	}
	body := req.Body
	if body == http.NoBody {
		body = nil
	}
	cl := req.ContentLength
	if body != nil && cl == 0 {
		cl = -1 // net/http: a Body with ContentLength 0 is of unknown length
	}
	if body == nil {
		cl = 0
	}

	_, _ = bw.WriteString(method)
	_ = bw.WriteByte(' ')
	_, _ = bw.WriteString(uri)
	_, _ = bw.WriteString(" HTTP/1.1\r\nHost: ")
	_, _ = bw.WriteString(host)
	_, _ = bw.WriteString("\r\n")
	hasClose := false
	for k, vs := range req.Header {
		switch k {
		case "Host", "Content-Length", "Transfer-Encoding", "Trailer":
			continue
		case "Connection":
			hasClose = hasToken(vs, "close")
		}
		if !validToken(k) {
			return errBadHeader
		}
		for _, v := range vs {
			if !validFieldValue(v) {
				return errBadHeader
			}
			_, _ = bw.WriteString(k)
			_, _ = bw.WriteString(": ")
			_, _ = bw.WriteString(v)
			_, _ = bw.WriteString("\r\n")
		}
	}
	pc.keepAlive = !req.Close && !hasClose
	if req.Close && !hasClose {
		_, _ = bw.WriteString("Connection: close\r\n")
	}
	switch {
	case cl > 0:
		_, _ = bw.WriteString("Content-Length: ")
		writeInt(bw, cl)
		_, _ = bw.WriteString("\r\n")
	case cl < 0:
		_, _ = bw.WriteString("Transfer-Encoding: chunked\r\n")
		if len(req.Trailer) > 0 {
			_, _ = bw.WriteString("Trailer: ")
			first := true
			for k := range req.Trailer {
				if !validToken(k) {
					return errBadHeader
				}
				if !first {
					_ = bw.WriteByte(',')
				}
				first = false
				_, _ = bw.WriteString(k)
			}
			_, _ = bw.WriteString("\r\n")
		}
	case method == http.MethodPost || method == http.MethodPut || method == http.MethodPatch:
		_, _ = bw.WriteString("Content-Length: 0\r\n")
	}
	_, _ = bw.WriteString("\r\n")

	if body == nil {
		return bw.Flush()
	}
	if cl > 0 && cl <= inlineBodyMax {
		err := copyBody(bw, body, cl, false)
		_ = body.Close()
		if err != nil {
			return err
		}
		return bw.Flush()
	}
	if err := bw.Flush(); err != nil {
		_ = body.Close()
		return err
	}
	pc.writing = true
	go pc.streamBody(body, cl, req)
	return nil
}

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// copyBody copies a body of length n (or, with n < 0, up to EOF as chunks), flushing after each
// read when streaming so the upstream sees data as it comes.
func copyBody(bw *bufio.Writer, body io.Reader, n int64, flush bool) error {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	var written int64
	for n < 0 || written < n {
		p := buf
		if n >= 0 && int64(len(p)) > n-written {
			p = p[:n-written]
		}
		m, rerr := body.Read(p)
		if m > 0 {
			if n < 0 {
				writeChunkHeader(bw, m)
			}
			if _, err := bw.Write(p[:m]); err != nil {
				return err
			}
			if n < 0 {
				_, _ = bw.WriteString("\r\n")
			}
			written += int64(m)
			if flush {
				if err := bw.Flush(); err != nil {
					return err
				}
			}
		}
		if rerr == io.EOF {
			if n >= 0 && written < n {
				return errShortBody
			}
			return nil
		}
		if rerr != nil {
			return rerr
		}
	}
	return nil
}

// streamBody writes the request body concurrently with the response being read.
func (pc *pconn) streamBody(body io.ReadCloser, cl int64, req *http.Request) {
	bw := pc.bw
	err := copyBody(bw, body, cl, true)
	if err == nil && cl < 0 {
		_, _ = bw.WriteString("0\r\n")
		for k, vs := range req.Trailer {
			if !validToken(k) {
				continue
			}
			for _, v := range vs {
				if validFieldValue(v) {
					writeField(bw, k, v)
				}
			}
		}
		_, _ = bw.WriteString("\r\n")
	}
	if err == nil {
		err = bw.Flush()
	}
	_ = body.Close()
	if err != nil {
		_ = pc.conn.Close()
	}
	pc.writeDone <- err
}
