package proxyadmin

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Secret types and states, in istioctl's words.
const (
	TypeCertChain = "Cert Chain"
	TypeCA        = "CA"
	StateActive   = "ACTIVE"
	StateWarming  = "WARMING"
)

// Secret is one row of `proxy-config secret`: an SDS secret the proxy holds
// and its first certificate (the leaf of a chain, the first root of a
// bundle).
type Secret struct {
	Name         string    `json:"resource_name"`
	Type         string    `json:"type"`   // TypeCertChain or TypeCA
	Status       string    `json:"status"` // StateActive or StateWarming
	Valid        bool      `json:"valid_cert"`
	SerialNumber string    `json:"serial_number"` // lower-case hex, as /certs
	NotAfter     time.Time `json:"not_after"`
	NotBefore    time.Time `json:"not_before"`
	// SPIFFEID is the certificate's spiffe:// URI SAN ("" for roots).
	SPIFFEID string `json:"spiffe_id,omitempty"`
	// DaysUntilExpiry counts whole days left, as /certs does (0 when expired).
	DaysUntilExpiry int `json:"days_until_expiry"`
	// Certificates is how many certificates the secret holds (chain length
	// without the root, or roots in the bundle).
	Certificates int `json:"certificates"`
	// Version is the SDS version_info (trellis-proxy: the serial it carries).
	Version     string    `json:"version_info,omitempty"`
	LastUpdated time.Time `json:"last_updated,omitzero"`
}

// Secrets lists the secrets of d's SecretsConfigDump, static ones first, then
// active and warming dynamic ones, as istioctl does. A secret with no
// certificate in it (a key-only or non-inline one) is listed with what is
// known.
func Secrets(d *adminv3.ConfigDump, now time.Time) ([]Secret, error) {
	var out []Secret
	for _, a := range d.GetConfigs() {
		sd := &adminv3.SecretsConfigDump{}
		if !a.MessageIs(sd) {
			continue
		}
		if err := a.UnmarshalTo(sd); err != nil {
			return nil, fmt.Errorf("config dump: secrets: %w", err)
		}
		for _, s := range sd.GetStaticSecrets() {
			row, err := secretRow(s.GetName(), StateActive, "", s.GetLastUpdated(), s.GetSecret(), now)
			if err != nil {
				return nil, err
			}
			out = append(out, row)
		}
		for _, list := range []struct {
			state   string
			secrets []*adminv3.SecretsConfigDump_DynamicSecret
		}{{StateActive, sd.GetDynamicActiveSecrets()}, {StateWarming, sd.GetDynamicWarmingSecrets()}} {
			for _, s := range list.secrets {
				row, err := secretRow(s.GetName(), list.state, s.GetVersionInfo(), s.GetLastUpdated(), s.GetSecret(), now)
				if err != nil {
					return nil, err
				}
				out = append(out, row)
			}
		}
	}
	return out, nil
}

func secretRow(name, state, version string, updated *timestamppb.Timestamp, a *anypb.Any, now time.Time) (Secret, error) {
	row := Secret{Name: name, Status: state, Version: version}
	if updated != nil {
		row.LastUpdated = updated.AsTime().UTC()
	}
	if a == nil {
		return row, nil
	}
	sec := &tlsv3.Secret{}
	if err := a.UnmarshalTo(sec); err != nil {
		return row, fmt.Errorf("config dump: secret %q: %w", name, err)
	}
	var pemData []byte
	switch t := sec.GetType().(type) {
	case *tlsv3.Secret_TlsCertificate:
		row.Type = TypeCertChain
		pemData = inline(t.TlsCertificate.GetCertificateChain())
	case *tlsv3.Secret_ValidationContext:
		row.Type = TypeCA
		pemData = inline(t.ValidationContext.GetTrustedCa())
	default:
		return row, nil
	}
	certs := parsePEM(pemData)
	row.Certificates = len(certs)
	if len(certs) == 0 {
		return row, nil
	}
	c := certs[0]
	row.SerialNumber = c.SerialNumber.Text(16)
	row.NotAfter, row.NotBefore = c.NotAfter.UTC(), c.NotBefore.UTC()
	row.Valid = !now.Before(c.NotBefore) && !now.After(c.NotAfter)
	if left := c.NotAfter.Sub(now); left > 0 {
		row.DaysUntilExpiry = int(left / (24 * time.Hour))
	}
	for _, u := range c.URIs {
		if u.Scheme == "spiffe" {
			row.SPIFFEID = u.String()
			break
		}
	}
	return row, nil
}

// inline is a data source's inline content; file and environment sources are
// the proxy's to read, not ours.
func inline(ds *corev3.DataSource) []byte {
	switch s := ds.GetSpecifier().(type) {
	case *corev3.DataSource_InlineBytes:
		return s.InlineBytes
	case *corev3.DataSource_InlineString:
		return []byte(s.InlineString)
	}
	return nil
}

// parsePEM returns the certificates in b, skipping blocks that are not.
func parsePEM(b []byte) []*x509.Certificate {
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return out
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		if c, err := x509.ParseCertificate(blk.Bytes); err == nil {
			out = append(out, c)
		}
	}
}
