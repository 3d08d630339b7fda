//lint:file-ignore SA1019 Envoy still honours match_subject_alt_names, so trellis-proxy must too.

package xdsconfig

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/trellis-mesh/trellis/internal/proxy/route"
	"github.com/trellis-mesh/trellis/internal/proxy/upstream"
)

const (
	tlsSocketName       = "envoy.transport_sockets.tls"
	rawBufferSocketName = "envoy.transport_sockets.raw_buffer"
	downstreamTLSType   = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
	upstreamTLSType     = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
	rawBufferType       = "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"

	// Envoy's max_session_keys default.
	defaultMaxSessionKeys = 1
)

// downstreamTransportSocket converts a filter chain's transport_socket: nil for plaintext, else the
// server TLS config.
func downstreamTransportSocket(ts *corev3.TransportSocket, o *options) (*tls.Config, error) {
	tc, err := transportSocketConfig(ts, downstreamTLSType)
	if tc == nil || err != nil {
		return nil, err
	}
	var d tlsv3.DownstreamTlsContext
	if err := anypb.UnmarshalTo(tc, &d, protoUnmarshal); err != nil {
		return nil, fmt.Errorf("typed_config: %w", err)
	}
	cfg, err := downstreamTLS(&d, o)
	if err != nil {
		return nil, fmt.Errorf("typed_config (DownstreamTlsContext).%w", err)
	}
	return cfg, nil
}

// upstreamTransportSocket converts a cluster's transport_socket: nil for plaintext.
func upstreamTransportSocket(ts *corev3.TransportSocket, o *options) (*upstream.TLS, error) {
	tc, err := transportSocketConfig(ts, upstreamTLSType)
	if tc == nil || err != nil {
		return nil, err
	}
	var u tlsv3.UpstreamTlsContext
	if err := anypb.UnmarshalTo(tc, &u, protoUnmarshal); err != nil {
		return nil, fmt.Errorf("typed_config: %w", err)
	}
	out, err := upstreamTLS(&u, o)
	if err != nil {
		return nil, fmt.Errorf("typed_config (UpstreamTlsContext).%w", err)
	}
	return out, nil
}

// transportSocketConfig returns the TLS context of a transport socket, or nil for raw_buffer.
func transportSocketConfig(ts *corev3.TransportSocket, tlsType string) (*anypb.Any, error) {
	if ts == nil {
		return nil, nil
	}
	if err := onlyFields(ts, "name", "typed_config"); err != nil {
		return nil, err
	}
	tc := ts.GetTypedConfig()
	switch {
	case tc.GetTypeUrl() == tlsType:
		return tc, nil
	case tc.GetTypeUrl() == rawBufferType, tc == nil && ts.GetName() == rawBufferSocketName:
		return nil, nil
	case tc == nil && ts.GetName() == tlsSocketName:
		return nil, errors.New("typed_config: the TLS transport socket needs its TLS context")
	}
	kind := tc.GetTypeUrl()
	if kind == "" {
		kind = ts.GetName()
	}
	return nil, fmt.Errorf("%q: only TLS and raw_buffer transport sockets are %w", kind, ErrUnsupported)
}

func downstreamTLS(d *tlsv3.DownstreamTlsContext, o *options) (*tls.Config, error) {
	if err := d.Validate(); err != nil {
		return nil, err
	}
	if err := onlyFields(d, "common_tls_context", "require_client_certificate", "require_sni",
		"disable_stateless_session_resumption", "disable_stateful_session_resumption", "ocsp_staple_policy"); err != nil {
		return nil, err
	}
	if d.GetOcspStaplePolicy() != tlsv3.DownstreamTlsContext_LENIENT_STAPLING {
		return nil, fmt.Errorf("ocsp_staple_policy %s: %w", d.GetOcspStaplePolicy(), ErrUnsupported)
	}
	cfg, v, sds, err := commonTLS(d.GetCommonTlsContext(), o)
	if err != nil {
		return nil, fmt.Errorf("common_tls_context.%w", err)
	}
	switch {
	case sds != nil:
		// Looked up per handshake: a rotated certificate serves the next connection.
		cfg.GetCertificate = func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return sds() }
	case len(cfg.Certificates) == 0:
		return nil, errors.New("common_tls_context.tls_certificates: a server needs a certificate")
	}
	serverALPN(cfg)
	// Envoy asks for a client certificate whenever it can validate one, and insists only when told.
	switch {
	case d.GetRequireClientCertificate().GetValue():
		cfg.ClientAuth = tls.RequireAnyClientCert
	case v != nil:
		cfg.ClientAuth = tls.RequestClientCert
	}
	cfg.SessionTicketsDisabled = d.GetDisableStatelessSessionResumption()
	requireSNI := d.GetRequireSni().GetValue()
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if requireSNI && cs.ServerName == "" {
			return errors.New("tls: the client sent no SNI and require_sni is set")
		}
		if v == nil || len(cs.PeerCertificates) == 0 {
			return nil
		}
		return v.verify(cs.PeerCertificates, x509.ExtKeyUsageClientAuth)
	}
	return cfg, nil
}

func upstreamTLS(u *tlsv3.UpstreamTlsContext, o *options) (*upstream.TLS, error) {
	if err := u.Validate(); err != nil {
		return nil, err
	}
	if err := onlyFields(u, "common_tls_context", "sni", "allow_renegotiation", "max_session_keys"); err != nil {
		return nil, err
	}
	if u.GetAllowRenegotiation() {
		return nil, fmt.Errorf("allow_renegotiation: %w", ErrUnsupported)
	}
	cfg, v, sds, err := commonTLS(u.GetCommonTlsContext(), o)
	if err != nil {
		return nil, fmt.Errorf("common_tls_context.%w", err)
	}
	if sds != nil {
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return sds() }
	}
	out := &upstream.TLS{Config: cfg, SNI: u.GetSni(), ALPN: cfg.NextProtos}
	cfg.NextProtos = nil
	// Envoy does not check the server's name against SNI: only the chain (with a trusted_ca) and
	// the SAN matchers. crypto/tls would insist on the name, so its own check is off and ours runs.
	cfg.InsecureSkipVerify = true
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if v == nil {
			return nil
		}
		if len(cs.PeerCertificates) == 0 {
			return errors.New("tls: the upstream sent no certificate")
		}
		return v.verify(cs.PeerCertificates, x509.ExtKeyUsageServerAuth)
	}
	keys := uint32(defaultMaxSessionKeys)
	if m := u.GetMaxSessionKeys(); m != nil {
		keys = m.GetValue()
	}
	if keys > 0 {
		out.Sessions = tls.NewLRUClientSessionCache(int(keys))
	}
	return out, nil
}

// commonTLS converts what both sides share: certificates, validation, ALPN and TLS parameters.
// The validator is nil when there is no validation context. sds is set when the certificate comes
// from SDS (tls_certificate_sds_secret_configs): the caller installs it as a per-handshake lookup.
func commonTLS(c *tlsv3.CommonTlsContext, o *options) (cfg *tls.Config, v *validator, sds func() (*tls.Certificate, error), err error) {
	if err := onlyFields(c, "tls_params", "tls_certificates", "validation_context", "alpn_protocols",
		"tls_certificate_sds_secret_configs", "validation_context_sds_secret_config", "combined_validation_context"); err != nil {
		return nil, nil, nil, err
	}
	cfg = &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: c.GetAlpnProtocols()}
	if err := tlsParams(cfg, c.GetTlsParams()); err != nil {
		return nil, nil, nil, fmt.Errorf("tls_params.%w", err)
	}
	for i, tc := range c.GetTlsCertificates() {
		cert, err := tlsCertificate(tc)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("tls_certificates[%d].%w", i, err)
		}
		cfg.Certificates = append(cfg.Certificates, cert)
	}
	if refs := c.GetTlsCertificateSdsSecretConfigs(); len(refs) > 0 {
		if len(cfg.Certificates) > 0 {
			return nil, nil, nil, errors.New("tls_certificate_sds_secret_configs: not together with tls_certificates")
		}
		names := make([]string, len(refs))
		for i, r := range refs {
			if names[i], err = sdsSecret(r, SDSWorkloadSecret); err != nil {
				return nil, nil, nil, fmt.Errorf("tls_certificate_sds_secret_configs[%d].%w", i, err)
			}
		}
		sds = sdsCertificates(o.secrets, names)
	}
	switch vc := c.GetValidationContextType().(type) {
	case *tlsv3.CommonTlsContext_ValidationContext:
		if v, err = validationContext(vc.ValidationContext); err != nil {
			return nil, nil, nil, fmt.Errorf("validation_context.%w", err)
		}
	case *tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig:
		v = &validator{}
		if v.bundle, err = sdsSecret(vc.ValidationContextSdsSecretConfig, SDSRootSecret); err != nil {
			return nil, nil, nil, fmt.Errorf("validation_context_sds_secret_config.%w", err)
		}
		v.secrets = o.secrets
	case *tlsv3.CommonTlsContext_CombinedValidationContext:
		cv := vc.CombinedValidationContext
		if err := onlyFields(cv, "default_validation_context", "validation_context_sds_secret_config"); err != nil {
			return nil, nil, nil, fmt.Errorf("combined_validation_context.%w", err)
		}
		v = &validator{}
		if d := cv.GetDefaultValidationContext(); d != nil {
			if v, err = validationContext(d); err != nil {
				return nil, nil, nil, fmt.Errorf("combined_validation_context.default_validation_context.%w", err)
			}
		}
		if v.bundle, err = sdsSecret(cv.GetValidationContextSdsSecretConfig(), SDSRootSecret); err != nil {
			return nil, nil, nil, fmt.Errorf("combined_validation_context.validation_context_sds_secret_config.%w", err)
		}
		if v.roots != nil {
			return nil, nil, nil, errors.New("combined_validation_context.default_validation_context.trusted_ca: not together with the SDS trust bundle")
		}
		v.secrets = o.secrets
	}
	return cfg, v, sds, nil
}

// serverALPN makes a server that offers ALPN protocols carry on without ALPN when a client offers
// none of them, as Envoy does (crypto/tls would refuse the handshake): Istio's clients offer
// "istio-peer-exchange" and "istio" to servers listing "h2" and "http/1.1".
func serverALPN(cfg *tls.Config) {
	protos := cfg.NextProtos
	if len(protos) == 0 {
		return
	}
	cfg.GetConfigForClient = func(h *tls.ClientHelloInfo) (*tls.Config, error) {
		if len(h.SupportedProtos) == 0 {
			return nil, nil
		}
		for _, c := range h.SupportedProtos {
			if slices.Contains(protos, c) || (c == "http/1.1" && slices.Contains(protos, "h2")) {
				return nil, nil
			}
		}
		noALPN := cfg.Clone()
		noALPN.NextProtos = nil
		noALPN.GetConfigForClient = nil
		return noALPN, nil
	}
}

func tlsCertificate(tc *tlsv3.TlsCertificate) (tls.Certificate, error) {
	if err := onlyFields(tc, "certificate_chain", "private_key"); err != nil {
		return tls.Certificate{}, err
	}
	chain, err := dataSource(tc.GetCertificateChain())
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("certificate_chain.%w", err)
	}
	key, err := dataSource(tc.GetPrivateKey())
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("private_key.%w", err)
	}
	cert, err := tls.X509KeyPair(chain, key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("certificate_chain: %w", err)
	}
	return cert, nil
}

// dataSource reads an Envoy DataSource; files are read once, when the config is applied.
func dataSource(d *corev3.DataSource) ([]byte, error) {
	switch s := d.GetSpecifier().(type) {
	case *corev3.DataSource_InlineString:
		return []byte(s.InlineString), nil
	case *corev3.DataSource_InlineBytes:
		return s.InlineBytes, nil
	case *corev3.DataSource_Filename:
		b, err := os.ReadFile(s.Filename)
		if err != nil {
			return nil, fmt.Errorf("filename: %w", err)
		}
		return b, nil
	case nil:
		return nil, errors.New("specifier: inline_string, inline_bytes or filename is required")
	default:
		return nil, fmt.Errorf("specifier %T: %w", s, ErrUnsupported)
	}
}

var tlsVersions = map[tlsv3.TlsParameters_TlsProtocol]uint16{
	tlsv3.TlsParameters_TLSv1_0: tls.VersionTLS10,
	tlsv3.TlsParameters_TLSv1_1: tls.VersionTLS11,
	tlsv3.TlsParameters_TLSv1_2: tls.VersionTLS12,
	tlsv3.TlsParameters_TLSv1_3: tls.VersionTLS13,
}

// cipherSuites maps BoringSSL's names, which Envoy uses, to crypto/tls. TLS 1.3 suites are not
// configurable in either.
var cipherSuites = map[string]uint16{
	"ECDHE-ECDSA-AES128-GCM-SHA256": tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	"ECDHE-RSA-AES128-GCM-SHA256":   tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	"ECDHE-ECDSA-AES256-GCM-SHA384": tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	"ECDHE-RSA-AES256-GCM-SHA384":   tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	"ECDHE-ECDSA-CHACHA20-POLY1305": tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	"ECDHE-RSA-CHACHA20-POLY1305":   tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
	"ECDHE-ECDSA-AES128-SHA":        tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA,
	"ECDHE-RSA-AES128-SHA":          tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA,
	"ECDHE-ECDSA-AES256-SHA":        tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA,
	"ECDHE-RSA-AES256-SHA":          tls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA,
	"AES128-GCM-SHA256":             tls.TLS_RSA_WITH_AES_128_GCM_SHA256,
	"AES256-GCM-SHA384":             tls.TLS_RSA_WITH_AES_256_GCM_SHA384,
	"AES128-SHA":                    tls.TLS_RSA_WITH_AES_128_CBC_SHA,
	"AES256-SHA":                    tls.TLS_RSA_WITH_AES_256_CBC_SHA,
}

var curves = map[string]tls.CurveID{
	"X25519":         tls.X25519,
	"P-256":          tls.CurveP256,
	"P-384":          tls.CurveP384,
	"P-521":          tls.CurveP521,
	"X25519MLKEM768": tls.X25519MLKEM768,
}

func tlsParams(cfg *tls.Config, p *tlsv3.TlsParameters) error {
	if p == nil {
		return nil
	}
	if err := onlyFields(p, "tls_minimum_protocol_version", "tls_maximum_protocol_version", "cipher_suites", "ecdh_curves"); err != nil {
		return err
	}
	if v := p.GetTlsMinimumProtocolVersion(); v != tlsv3.TlsParameters_TLS_AUTO {
		cfg.MinVersion = tlsVersions[v]
	}
	if v := p.GetTlsMaximumProtocolVersion(); v != tlsv3.TlsParameters_TLS_AUTO {
		cfg.MaxVersion = tlsVersions[v]
	}
	if cfg.MaxVersion != 0 && cfg.MaxVersion < cfg.MinVersion {
		return errors.New("tls_maximum_protocol_version is below tls_minimum_protocol_version")
	}
	for i, name := range p.GetCipherSuites() {
		// "[A|B]" is an equal-preference group in BoringSSL; crypto/tls orders suites itself.
		for n := range strings.SplitSeq(strings.Trim(name, "[]"), "|") {
			id, ok := cipherSuites[n]
			if !ok {
				return fmt.Errorf("cipher_suites[%d] %q: %w", i, n, ErrUnsupported)
			}
			cfg.CipherSuites = append(cfg.CipherSuites, id)
		}
	}
	for i, name := range p.GetEcdhCurves() {
		id, ok := curves[name]
		if !ok {
			return fmt.Errorf("ecdh_curves[%d] %q: %w", i, name, ErrUnsupported)
		}
		cfg.CurvePreferences = append(cfg.CurvePreferences, id)
	}
	return nil
}

// sanType is the kind of subject alternative name a matcher looks at; sanAny is the deprecated
// match_subject_alt_names, which looks at all of them.
type sanType int

const (
	sanAny sanType = iota
	sanDNS
	sanURI
	sanEmail
	sanIP
)

type sanMatcher struct {
	kind sanType
	m    route.StringMatcher
}

// validator checks a peer's certificate chain: against trusted_ca (or the SDS trust bundle) when
// set, then the SAN matchers.
type validator struct {
	roots *x509.CertPool // nil: the chain is not checked (no trusted_ca, or ACCEPT_UNTRUSTED)
	// bundle, when set, names the SDS trust bundle looked up in secrets on every handshake.
	bundle  string
	secrets SecretSource
	sans    []sanMatcher
}

func validationContext(vc *tlsv3.CertificateValidationContext) (*validator, error) {
	if err := onlyFields(vc, "trusted_ca", "match_typed_subject_alt_names", "match_subject_alt_names",
		"trust_chain_verification"); err != nil {
		return nil, err
	}
	v := &validator{}
	if ca := vc.GetTrustedCa(); ca != nil && vc.GetTrustChainVerification() == tlsv3.CertificateValidationContext_VERIFY_TRUST_CHAIN {
		pem, err := dataSource(ca)
		if err != nil {
			return nil, fmt.Errorf("trusted_ca.%w", err)
		}
		v.roots = x509.NewCertPool()
		if !v.roots.AppendCertsFromPEM(pem) {
			return nil, errors.New("trusted_ca: no PEM certificate found")
		}
	}
	for i, m := range vc.GetMatchTypedSubjectAltNames() {
		var kind sanType
		switch m.GetSanType() {
		case tlsv3.SubjectAltNameMatcher_DNS:
			kind = sanDNS
		case tlsv3.SubjectAltNameMatcher_URI:
			kind = sanURI
		case tlsv3.SubjectAltNameMatcher_EMAIL:
			kind = sanEmail
		case tlsv3.SubjectAltNameMatcher_IP_ADDRESS:
			kind = sanIP
		default:
			return nil, fmt.Errorf("match_typed_subject_alt_names[%d].san_type %s: %w", i, m.GetSanType(), ErrUnsupported)
		}
		if m.GetOid() != "" {
			return nil, fmt.Errorf("match_typed_subject_alt_names[%d].oid: %w", i, ErrUnsupported)
		}
		sm, err := stringMatcher(m.GetMatcher())
		if err != nil {
			return nil, fmt.Errorf("match_typed_subject_alt_names[%d].matcher.%w", i, err)
		}
		v.sans = append(v.sans, sanMatcher{kind: kind, m: sm})
	}
	for i, m := range vc.GetMatchSubjectAltNames() {
		sm, err := stringMatcher(m)
		if err != nil {
			return nil, fmt.Errorf("match_subject_alt_names[%d].%w", i, err)
		}
		v.sans = append(v.sans, sanMatcher{kind: sanAny, m: sm})
	}
	return v, nil
}

func (v *validator) verify(chain []*x509.Certificate, usage x509.ExtKeyUsage) error {
	leaf := chain[0]
	roots := v.roots
	if v.bundle != "" {
		var err error
		if roots, err = v.secrets.TrustBundle(v.bundle); err != nil {
			return fmt.Errorf("tls: cannot verify the peer: %w", err)
		}
	}
	if roots != nil {
		inter := x509.NewCertPool()
		for _, c := range chain[1:] {
			inter.AddCert(c)
		}
		opts := x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage, x509.ExtKeyUsageAny}}
		if _, err := leaf.Verify(opts); err != nil {
			return fmt.Errorf("tls: peer certificate: %w", err)
		}
	}
	if len(v.sans) == 0 {
		return nil
	}
	for i := range v.sans {
		if v.sans[i].matches(leaf) {
			return nil
		}
	}
	return errors.New("tls: peer certificate matches none of the subject alt names allowed")
}

func (s *sanMatcher) matches(c *x509.Certificate) bool {
	if s.kind == sanAny || s.kind == sanDNS {
		for _, n := range c.DNSNames {
			if s.m.Match(n) || s.dnsWildcard(n) {
				return true
			}
		}
	}
	if s.kind == sanAny || s.kind == sanURI {
		for _, u := range c.URIs {
			if s.m.Match(u.String()) {
				return true
			}
		}
	}
	if s.kind == sanAny || s.kind == sanEmail {
		for _, e := range c.EmailAddresses {
			if s.m.Match(e) {
				return true
			}
		}
	}
	if s.kind == sanAny || s.kind == sanIP {
		for _, ip := range c.IPAddresses {
			if s.m.Match(ip.String()) {
				return true
			}
		}
	}
	return false
}

// dnsWildcard is Envoy's rule for exact matchers on DNS SANs: a certificate for "*.example.com"
// matches the exact name "api.example.com" (one label only).
func (s *sanMatcher) dnsWildcard(san string) bool {
	if s.m.Kind != route.StringExact || !strings.HasPrefix(san, "*.") {
		return false
	}
	want := s.m.Value
	dot := strings.IndexByte(want, '.')
	return dot > 0 && net.ParseIP(want) == nil && strings.EqualFold(want[dot:], san[1:])
}
