package hcm

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"net/http"
	"net/url"
	"strings"

	"github.com/trellis-mesh/trellis/internal/proxy/xdsconfig"
)

// headerXFCC is x-forwarded-client-cert in its canonical form.
const headerXFCC = "X-Forwarded-Client-Cert"

// WithLocalCertificate gives the handler the certificate its listener presents (the identity
// agent's "default" secret), whose URI SAN is the By field of the XFCC elements it adds.
func WithLocalCertificate(cert func() *tls.Certificate) Option {
	return func(h *Handler) { h.localCert = cert }
}

// localURI caches the local certificate's first URI SAN: it changes only with a rotation.
type localURI struct {
	cert *tls.Certificate
	uri  string
}

// forwardClientCert applies forward_client_cert_details to the request, as Envoy's
// ConnectionManagerUtility::mutateXfccRequestHeader: the header is only trusted from a client that
// presented a certificate (or always, with ALWAYS_FORWARD_ONLY).
func (h *Handler) forwardClientCert(r *http.Request) {
	mode := h.cfg.ForwardClientCert
	if mode == xdsconfig.XFCCAlwaysForwardOnly {
		return
	}
	mtls := r.TLS != nil && len(r.TLS.PeerCertificates) > 0
	if !mtls || mode == xdsconfig.XFCCSanitize {
		delete(r.Header, headerXFCC)
		return
	}
	switch mode {
	case xdsconfig.XFCCForwardOnly:
	case xdsconfig.XFCCAppendForward:
		el := h.xfccElement(r.TLS)
		if prev := r.Header[headerXFCC]; len(prev) > 0 {
			el = strings.Join(prev, ",") + "," + el
		}
		r.Header[headerXFCC] = []string{el}
	case xdsconfig.XFCCSanitizeSet:
		r.Header[headerXFCC] = []string{h.xfccElement(r.TLS)}
	}
}

// xfccElement is this hop's element: By (our URI SAN), Hash (of the client's certificate), then
// the fields set_current_client_cert_details asks for, in Envoy's order.
func (h *Handler) xfccElement(cs *tls.ConnectionState) string {
	peer := cs.PeerCertificates[0]
	var b strings.Builder
	if by := h.localURISAN(); by != "" {
		b.WriteString("By=")
		b.WriteString(by)
		b.WriteByte(';')
	}
	sum := sha256.Sum256(peer.Raw)
	b.WriteString("Hash=")
	b.WriteString(hex.EncodeToString(sum[:]))
	d := h.cfg.SetCurrentClientCert
	if d.Cert {
		b.WriteString(`;Cert="`)
		b.WriteString(url.QueryEscape(string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: peer.Raw}))))
		b.WriteByte('"')
	}
	if d.Chain {
		var chain []byte
		for _, c := range cs.PeerCertificates {
			chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
		}
		b.WriteString(`;Chain="`)
		b.WriteString(url.QueryEscape(string(chain)))
		b.WriteByte('"')
	}
	if d.Subject {
		b.WriteString(`;Subject="`)
		b.WriteString(strings.ReplaceAll(peer.Subject.String(), `"`, `\"`))
		b.WriteByte('"')
	}
	if d.URI {
		for _, u := range peer.URIs {
			b.WriteString(";URI=")
			b.WriteString(u.String())
		}
	}
	if d.DNS {
		for _, n := range peer.DNSNames {
			b.WriteString(";DNS=")
			b.WriteString(n)
		}
	}
	return b.String()
}

func (h *Handler) localURISAN() string {
	if h.localCert == nil {
		return ""
	}
	c := h.localCert()
	if c == nil || len(c.Certificate) == 0 {
		return ""
	}
	if last := h.lastLocal.Load(); last != nil && last.cert == c {
		return last.uri
	}
	l := &localURI{cert: c}
	if leaf, err := x509.ParseCertificate(c.Certificate[0]); err == nil && len(leaf.URIs) > 0 {
		l.uri = leaf.URIs[0].String()
	}
	h.lastLocal.Store(l)
	return l.uri
}
