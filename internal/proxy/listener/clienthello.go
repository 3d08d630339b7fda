package listener

// What the TLS inspector learns from a ClientHello, read without consuming it: the TLS handshake
// itself happens later, in the chosen filter chain, over the same bytes.

// helloState is how far parseClientHello got.
type helloState int

const (
	helloNeedMore helloState = iota // a ClientHello so far: more bytes are needed
	helloDone                       // a whole ClientHello was parsed
	helloNotTLS                     // the bytes are not a TLS ClientHello
)

const (
	recordHeaderLen = 5
	maxRecordLen    = 16384 + 2048 // TLSPlaintext may not be longer (RFC 8446, 5.1)
	// maxHelloLen bounds how much the inspector reads; a real ClientHello is a few KiB.
	maxHelloLen = 64 << 10

	extServerName = 0
	extALPN       = 16
)

// clientHello is what the inspector takes from a ClientHello.
type clientHello struct {
	serverName string
	alpn       []string
}

// parseClientHello parses the ClientHello that starts b, which may span several handshake
// records. It never reads past b.
func parseClientHello(b []byte) (clientHello, helloState) {
	var hs []byte // the handshake bytes, joined from the records read so far
	for len(b) > 0 {
		if len(b) < recordHeaderLen {
			return clientHello{}, helloNeedMore
		}
		if b[0] != 0x16 || b[1] != 3 {
			return clientHello{}, helloNotTLS
		}
		n := int(b[3])<<8 | int(b[4])
		if n == 0 || n > maxRecordLen {
			return clientHello{}, helloNotTLS
		}
		if len(b) < recordHeaderLen+n {
			return clientHello{}, helloNeedMore
		}
		if hs == nil {
			hs = b[recordHeaderLen : recordHeaderLen+n : recordHeaderLen+n]
		} else {
			hs = append(hs, b[recordHeaderLen:recordHeaderLen+n]...)
		}
		b = b[recordHeaderLen+n:]
		if len(hs) < 4 {
			continue
		}
		if hs[0] != 1 { // client_hello
			return clientHello{}, helloNotTLS
		}
		msgLen := int(hs[1])<<16 | int(hs[2])<<8 | int(hs[3])
		if msgLen > maxHelloLen {
			return clientHello{}, helloNotTLS
		}
		if len(hs) >= 4+msgLen {
			h, ok := parseHelloBody(hs[4 : 4+msgLen])
			if !ok {
				return clientHello{}, helloNotTLS
			}
			return h, helloDone
		}
	}
	return clientHello{}, helloNeedMore
}

// reader is a bounds-checked cursor; after any failed read ok is false and reads return zero.
type reader struct {
	b  []byte
	ok bool
}

func (r *reader) bytes(n int) []byte {
	if !r.ok || n < 0 || n > len(r.b) {
		r.ok = false
		return nil
	}
	out := r.b[:n]
	r.b = r.b[n:]
	return out
}

func (r *reader) u8() int {
	b := r.bytes(1)
	if b == nil {
		return 0
	}
	return int(b[0])
}

func (r *reader) u16() int {
	b := r.bytes(2)
	if b == nil {
		return 0
	}
	return int(b[0])<<8 | int(b[1])
}

func parseHelloBody(body []byte) (clientHello, bool) {
	var h clientHello
	r := reader{b: body, ok: true}
	r.bytes(2 + 32)  // legacy_version, random
	r.bytes(r.u8())  // legacy_session_id
	r.bytes(r.u16()) // cipher_suites
	r.bytes(r.u8())  // legacy_compression_methods
	if !r.ok {
		return h, false
	}
	if len(r.b) == 0 {
		return h, true // no extensions (TLS 1.0 style)
	}
	exts := reader{b: r.bytes(r.u16()), ok: r.ok}
	for exts.ok && len(exts.b) > 0 {
		typ := exts.u16()
		data := reader{b: exts.bytes(exts.u16()), ok: exts.ok}
		if !data.ok {
			return h, false
		}
		switch typ {
		case extServerName:
			list := reader{b: data.bytes(data.u16()), ok: data.ok}
			for list.ok && len(list.b) > 0 {
				nameType := list.u8()
				name := list.bytes(list.u16())
				if list.ok && nameType == 0 && h.serverName == "" {
					h.serverName = string(name)
				}
			}
			if !list.ok {
				return h, false
			}
		case extALPN:
			list := reader{b: data.bytes(data.u16()), ok: data.ok}
			for list.ok && len(list.b) > 0 {
				p := list.bytes(list.u8())
				if list.ok && len(p) > 0 {
					h.alpn = append(h.alpn, string(p))
				}
			}
			if !list.ok {
				return h, false
			}
		}
	}
	return h, exts.ok
}
