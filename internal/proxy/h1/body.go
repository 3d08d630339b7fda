package h1

import (
	"bufio"
	"errors"
	"io"
	"net/http"
)

// bodyKind is how a message body is delimited (RFC 9112 §6.3).
type bodyKind uint8

const (
	bodyNone    bodyKind = iota
	bodyFixed            // Content-Length
	bodyChunked          // Transfer-Encoding: chunked
	bodyToEOF            // a response read until the connection closes
)

const (
	maxChunkLine    = 4096
	maxTrailerBytes = 16 << 10
)

// Framing errors in a body are statusErrors too: a server whose handler has not answered yet
// answers them 400 (what Envoy's codec does), and a transport returns them.
var (
	errChunkSize      = badRequest("malformed chunk size")
	errChunkExt       = badRequest("malformed chunk extension")
	errChunkEnd       = badRequest("chunk data not followed by CRLF")
	errChunkLineLong  = badRequest("chunk size line too long")
	errTrailerTooLong = &statusError{http.StatusRequestHeaderFieldsTooLarge, "trailer section too large"}
	errBadTrailer     = badRequest("malformed trailer section")
)

type chunkState uint8

const (
	chunkHeader chunkState = iota // next: a chunk-size line
	chunkData                     // inside chunk data, remaining bytes left
	chunkCRLF                     // next: the CRLF after chunk data
)

// decoder reads one message body from a connection's reader. It is reused across the messages of a
// connection; the body objects handed out wrap it and make sure a stale one cannot reach it.
type decoder struct {
	br        *bufio.Reader
	kind      bodyKind
	remaining int64
	state     chunkState
	done      bool
	err       error
	// trailerDst receives a chunked body's trailer fields (merged into a map already there, which
	// holds the declared keys).
	trailerDst *http.Header
	scratch    []byte
}

func (d *decoder) reset(br *bufio.Reader, kind bodyKind, n int64) {
	*d = decoder{br: br, kind: kind, remaining: n, scratch: d.scratch[:0], done: kind == bodyNone || (kind == bodyFixed && n == 0)}
}

// Read reads body bytes. It returns io.EOF with the last bytes when it can, so that a connection is
// known reusable without another call.
func (d *decoder) Read(p []byte) (int, error) {
	if d.err != nil {
		return 0, d.err
	}
	if d.done {
		return 0, io.EOF
	}
	switch d.kind {
	case bodyFixed:
		if int64(len(p)) > d.remaining {
			p = p[:d.remaining]
		}
		n, err := d.br.Read(p)
		d.remaining -= int64(n)
		if d.remaining == 0 {
			d.done = true
			return n, io.EOF
		}
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		if err != nil {
			d.err = err
		}
		return n, err
	case bodyToEOF:
		n, err := d.br.Read(p)
		if err == io.EOF {
			d.done = true
		} else if err != nil {
			d.err = err
		}
		return n, err
	case bodyChunked:
		return d.readChunked(p)
	}
	return 0, io.EOF
}

func (d *decoder) readChunked(p []byte) (int, error) {
	for d.state == chunkHeader || d.state == chunkCRLF {
		if err := d.step(); err != nil {
			d.err = err
			return 0, err
		}
		if d.done {
			return 0, io.EOF
		}
	}
	if int64(len(p)) > d.remaining {
		p = p[:d.remaining]
	}
	n, err := d.br.Read(p)
	d.remaining -= int64(n)
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		d.err = err
		return n, err
	}
	if d.remaining == 0 {
		d.state = chunkCRLF
		// Consume what follows without blocking, so the final chunk is seen with the last data.
		for (d.state == chunkCRLF && d.br.Buffered() >= 2) || (d.state == chunkHeader && d.lineBuffered()) {
			if err := d.step(); err != nil {
				d.err = err
				return n, err
			}
			if d.done {
				return n, io.EOF
			}
		}
	}
	return n, nil
}

// lineBuffered reports whether a whole chunk-size line (and, for the last chunk, an immediately
// ending trailer section) is already buffered.
func (d *decoder) lineBuffered() bool {
	b, _ := d.br.Peek(d.br.Buffered())
	for i, c := range b {
		if c == '\n' {
			if len(b) > 0 && b[0] == '0' {
				// The last chunk: only step if the trailer section's end is buffered too.
				rest := b[i+1:]
				return len(rest) >= 2 && rest[0] == '\r' && rest[1] == '\n'
			}
			return true
		}
	}
	return false
}

// step reads a chunk-size line or the CRLF after chunk data.
func (d *decoder) step() error {
	if d.state == chunkCRLF {
		b, err := d.br.Peek(2)
		if err != nil {
			return unexpected(err)
		}
		if b[0] != '\r' || b[1] != '\n' {
			return errChunkEnd
		}
		_, _ = d.br.Discard(2)
		d.state = chunkHeader
		return nil
	}
	line, err := d.br.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		return errChunkLineLong
	}
	if err != nil {
		return unexpected(err)
	}
	if len(line) > maxChunkLine {
		return errChunkLineLong
	}
	n, err := parseChunkLine(line)
	if err != nil {
		return err
	}
	if n > 0 {
		d.state, d.remaining = chunkData, n
		return nil
	}
	return d.readTrailer()
}

// parseChunkLine parses "chunk-size [ chunk-ext ] CRLF" (RFC 9112 §7.1).
func parseChunkLine(line []byte) (int64, error) {
	if len(line) < 3 || line[len(line)-2] != '\r' {
		return 0, errChunkSize
	}
	line = line[:len(line)-2]
	var n int64
	i := 0
	for ; i < len(line); i++ {
		v := unhex(line[i])
		if v < 0 {
			break
		}
		if i >= 15 {
			return 0, errChunkSize
		}
		n = n<<4 | int64(v)
	}
	if i == 0 {
		return 0, errChunkSize
	}
	ext := line[i:]
	if len(ext) == 0 {
		return n, nil
	}
	for len(ext) > 0 && (ext[0] == ' ' || ext[0] == '\t') {
		ext = ext[1:]
	}
	if len(ext) == 0 || ext[0] != ';' {
		return 0, errChunkSize
	}
	for _, c := range ext {
		if (c < ' ' && c != '\t') || c == 0x7f {
			return 0, errChunkExt
		}
	}
	return n, nil
}

func unhex(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c-'a') + 10
	case 'A' <= c && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

func (d *decoder) readTrailer() error {
	head, err := readHead(d.br, d.scratch, 0, maxTrailerBytes, true)
	d.scratch = head[:0]
	if err != nil {
		var se *statusError
		if errors.As(err, &se) {
			if se == errHeaderTooLong {
				return errTrailerTooLong
			}
			return errBadTrailer
		}
		return unexpected(err)
	}
	if len(head) > 2 {
		s := string(head)
		t := http.Header(nil)
		if d.trailerDst != nil {
			t = *d.trailerDst
		}
		if t == nil {
			t = make(http.Header)
		}
		var scratch []byte
		if err := parseFields(s, t, nil, &scratch); err != nil {
			return errBadTrailer
		}
		if d.trailerDst != nil {
			*d.trailerDst = t
		}
	}
	d.done = true
	return nil
}

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
