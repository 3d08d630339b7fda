// Package spiffe builds and parses the workload identities of the mesh:
// SPIFFE IDs of Istio's form spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>,
// and Istio's "principal" strings, the same without the scheme.
//
// It depends on nothing but the standard library, so the proxy, the CA and
// translation can all share it.
package spiffe

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// Scheme prefixes every SPIFFE ID; Istio principals are IDs without it.
const Scheme = "spiffe://"

// DefaultTrustDomain is Istio's default MeshConfig trustDomain.
const DefaultTrustDomain = "cluster.local"

// Identity is one workload identity: a service account of a namespace in a
// trust domain.
type Identity struct {
	TrustDomain    string
	Namespace      string
	ServiceAccount string
}

// String is the SPIFFE ID: spiffe://cluster.local/ns/default/sa/sleep.
func (id Identity) String() string { return Scheme + id.Principal() }

// Principal is Istio's principal form: cluster.local/ns/default/sa/sleep.
func (id Identity) Principal() string {
	return id.TrustDomain + "/ns/" + id.Namespace + "/sa/" + id.ServiceAccount
}

// URL is the SPIFFE ID as the URI SAN of a certificate or CSR.
func (id Identity) URL() *url.URL {
	return &url.URL{Scheme: "spiffe", Host: id.TrustDomain, Path: "/ns/" + id.Namespace + "/sa/" + id.ServiceAccount}
}

// Validate says whether every part is non-empty and can be written into an ID
// and read back unchanged.
func (id Identity) Validate() error {
	if err := validTrustDomain(id.TrustDomain); err != nil {
		return err
	}
	if err := validSegment("namespace", id.Namespace); err != nil {
		return err
	}
	return validSegment("service account", id.ServiceAccount)
}

// Parse reads a SPIFFE ID of Istio's form spiffe://<td>/ns/<ns>/sa/<sa>.
func Parse(s string) (Identity, error) {
	rest, ok := strings.CutPrefix(s, Scheme)
	if !ok {
		return Identity{}, fmt.Errorf("SPIFFE ID %q: want the scheme %q", s, Scheme)
	}
	id, err := parsePrincipal(rest)
	if err != nil {
		return Identity{}, fmt.Errorf("SPIFFE ID %q: %w", s, err)
	}
	return id, nil
}

// ParsePrincipal reads Istio's principal form <td>/ns/<ns>/sa/<sa>.
func ParsePrincipal(s string) (Identity, error) {
	id, err := parsePrincipal(s)
	if err != nil {
		return Identity{}, fmt.Errorf("principal %q: %w", s, err)
	}
	return id, nil
}

func parsePrincipal(s string) (Identity, error) {
	parts := strings.Split(s, "/")
	if len(parts) != 5 || parts[1] != "ns" || parts[3] != "sa" {
		return Identity{}, errors.New("want <trust-domain>/ns/<namespace>/sa/<service-account>")
	}
	id := Identity{TrustDomain: parts[0], Namespace: parts[2], ServiceAccount: parts[4]}
	return id, id.Validate()
}

// FromURL reads the identity of a certificate's or CSR's URI SAN.
func FromURL(u *url.URL) (Identity, error) {
	if u == nil {
		return Identity{}, errors.New("SPIFFE ID: missing")
	}
	// u.String() re-encodes; a user, port, query or fragment makes the
	// result differ from what Parse accepts, which is what we want.
	return Parse(u.String())
}

// validTrustDomain follows the SPIFFE spec: lowercase letters, digits, '.',
// '-' and '_'.
func validTrustDomain(td string) error {
	if td == "" {
		return errors.New("trust domain is empty")
	}
	for i := 0; i < len(td); i++ {
		c := td[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			return fmt.Errorf("trust domain %q: character %q is not allowed (want lowercase letters, digits, '.', '-', '_')", td, c)
		}
	}
	return nil
}

// validSegment follows the SPIFFE spec for path segments: letters, digits,
// '.', '-' and '_', and not "." or "..". Kubernetes names are a subset.
func validSegment(what, s string) error {
	if s == "" {
		return fmt.Errorf("%s is empty", what)
	}
	if s == "." || s == ".." {
		return fmt.Errorf("%s %q is not allowed", what, s)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			return fmt.Errorf("%s %q: character %q is not allowed (want letters, digits, '.', '-', '_')", what, s, c)
		}
	}
	return nil
}
