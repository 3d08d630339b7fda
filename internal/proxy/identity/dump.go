package identity

import (
	"crypto/x509"
	"encoding/pem"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// redacted replaces private keys in dumps, as Envoy writes it.
const redacted = "[redacted]"

// Certificates is the store's part of Envoy's /certs: the trust bundle as ca_cert and the
// workload chain as cert_chain, path "<inline>" as Envoy shows SDS-delivered certificates.
func (s *Store) Certificates(now time.Time) *adminv3.Certificates {
	out := &adminv3.Certificates{}
	w, b := s.Workload(), s.Roots()
	if w == nil && b == nil {
		return out
	}
	c := &adminv3.Certificate{}
	if b != nil {
		for _, r := range b.Certs {
			c.CaCert = append(c.CaCert, certDetails(r, now))
		}
	}
	if w != nil {
		for _, x := range w.Chain {
			c.CertChain = append(c.CertChain, certDetails(x, now))
		}
	}
	out.Certificates = append(out.Certificates, c)
	return out
}

func certDetails(c *x509.Certificate, now time.Time) *adminv3.CertificateDetails {
	d := &adminv3.CertificateDetails{
		Path:           "<inline>",
		SerialNumber:   c.SerialNumber.Text(16),
		ValidFrom:      timestamppb.New(c.NotBefore),
		ExpirationTime: timestamppb.New(c.NotAfter),
	}
	if left := c.NotAfter.Sub(now); left > 0 {
		d.DaysUntilExpiration = uint64(left / (24 * time.Hour))
	}
	for _, u := range c.URIs {
		d.SubjectAltNames = append(d.SubjectAltNames, &adminv3.SubjectAlternateName{Name: &adminv3.SubjectAlternateName_Uri{Uri: u.String()}})
	}
	for _, n := range c.DNSNames {
		d.SubjectAltNames = append(d.SubjectAltNames, &adminv3.SubjectAlternateName{Name: &adminv3.SubjectAlternateName_Dns{Dns: n}})
	}
	for _, ip := range c.IPAddresses {
		d.SubjectAltNames = append(d.SubjectAltNames, &adminv3.SubjectAlternateName{Name: &adminv3.SubjectAlternateName_IpAddress{IpAddress: ip.String()}})
	}
	return d
}

// SecretsConfigDump is the store's /config_dump section: the dynamic active secrets "default"
// (chain, private key "[redacted]") and "ROOTCA" (trusted_ca), version_info the leaf's serial and
// the bundle's first serial.
func (s *Store) SecretsConfigDump() *adminv3.SecretsConfigDump {
	out := &adminv3.SecretsConfigDump{}
	if w := s.Workload(); w != nil {
		sec := &tlsv3.Secret{Name: WorkloadSecret, Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
			CertificateChain: inlineBytes(pemChain(w.Chain)),
			PrivateKey:       &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: redacted}},
		}}}
		out.DynamicActiveSecrets = append(out.DynamicActiveSecrets, dynamicSecret(sec, w.Chain[0], w.Updated))
	}
	if b := s.Roots(); b != nil {
		sec := &tlsv3.Secret{Name: RootSecret, Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa: inlineBytes(pemChain(b.Certs)),
		}}}
		out.DynamicActiveSecrets = append(out.DynamicActiveSecrets, dynamicSecret(sec, b.Certs[0], b.Updated))
	}
	return out
}

func dynamicSecret(sec *tlsv3.Secret, versionOf *x509.Certificate, updated time.Time) *adminv3.SecretsConfigDump_DynamicSecret {
	a, err := anypb.New(sec)
	if err != nil {
		return &adminv3.SecretsConfigDump_DynamicSecret{Name: sec.GetName()} // a registered type always marshals
	}
	return &adminv3.SecretsConfigDump_DynamicSecret{
		Name:        sec.GetName(),
		VersionInfo: versionOf.SerialNumber.Text(16),
		LastUpdated: timestamppb.New(updated),
		Secret:      a,
	}
}

func inlineBytes(b []byte) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: b}}
}

func pemChain(certs []*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}
