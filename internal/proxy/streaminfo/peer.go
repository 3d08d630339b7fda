package streaminfo

import (
	"crypto/tls"
	"crypto/x509"
	"sync/atomic"
	"unsafe"
)

// SetDownstreamTLS records that the downstream connection is TLS with state cs (nil: plaintext):
// DownstreamTLS, and DownstreamPeerURISAN from the client's certificate. The SAN string is cached
// per certificate, so the requests of a keep-alive connection do not render it again.
func (i *Info) SetDownstreamTLS(cs *tls.ConnectionState) {
	if cs == nil {
		return
	}
	i.DownstreamTLS = true
	if len(cs.PeerCertificates) > 0 {
		i.DownstreamPeerURISAN = PeerURISAN(cs.PeerCertificates[0])
	}
}

type sanEntry struct {
	cert *x509.Certificate
	san  string
}

// sanCache is a small direct-mapped cache from certificate to its first URI SAN.
var sanCache [256]atomic.Pointer[sanEntry]

// PeerURISAN is the first URI SAN of c ("" when it has none), Envoy's %DOWNSTREAM_PEER_URI_SAN%.
func PeerURISAN(c *x509.Certificate) string {
	if c == nil || len(c.URIs) == 0 {
		return ""
	}
	slot := &sanCache[(uintptr(unsafe.Pointer(c))>>6)&255]
	if e := slot.Load(); e != nil && e.cert == c {
		return e.san
	}
	san := c.URIs[0].String()
	slot.Store(&sanEntry{cert: c, san: san})
	return san
}
