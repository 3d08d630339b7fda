package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/trellis-mesh/trellis/internal/security/spiffe"
)

// Bootstrap tokens authenticate certificate requests where there is no
// Kubernetes to ask (file mode). They are compact JWTs (RFC 7519) signed with
// ES256 by a key derived from the CA's own key, so whoever holds the CA key
// can mint them, and nothing else needs storing. The claims are fixed by the
// security contract.
//
// The JWT code is ours rather than a JOSE library's on purpose: we only
// ever verify tokens we minted, with one algorithm and one key, so there is no
// algorithm negotiation, key lookup or JWS option to get wrong, and the whole
// parser is VerifyBootstrapToken below (fuzzed in token_test.go).
const (
	TokenIssuer   = "trellis-ca"
	TokenAudience = "trellis-ca"
	// subjectPrefix is Kubernetes' service-account username form.
	subjectPrefix = "system:serviceaccount:"
	// maxTokenBytes bounds what is decoded from an untrusted caller.
	maxTokenBytes = 8 << 10
	// tokenKeyInfo separates the derived key from any other use of the CA key.
	tokenKeyInfo = "trellis bootstrap token ES256 signing key v1"
)

// ErrInvalidToken is wrapped by every reason a bootstrap token is refused.
var ErrInvalidToken = errors.New("invalid bootstrap token")

type tokenHeader struct {
	Alg string `json:"alg"`
	Typ string `json:"typ,omitempty"`
	Kid string `json:"kid,omitempty"`
}

type tokenClaims struct {
	Iss string   `json:"iss"`
	Sub string   `json:"sub"`
	Aud []string `json:"aud"`
	Exp int64    `json:"exp"`
	Iat int64    `json:"iat,omitempty"`
}

// MintBootstrapToken returns a bootstrap token for the service account sa
// of namespace ns, valid for ttl: whoever holds it may obtain certificates
// for that identity until it expires. Treat it as a secret.
func (a *Authority) MintBootstrapToken(ns, sa string, ttl time.Duration) (string, error) {
	if ttl <= 0 {
		return "", fmt.Errorf("bootstrap token: ttl %s must be positive", ttl)
	}
	if err := (spiffe.Identity{TrustDomain: spiffe.DefaultTrustDomain, Namespace: ns, ServiceAccount: sa}).Validate(); err != nil {
		return "", fmt.Errorf("bootstrap token: %w", err)
	}
	now := a.opts.Now()
	header, err := json.Marshal(tokenHeader{Alg: "ES256", Typ: "JWT", Kid: a.tokenKeyID()})
	if err != nil {
		return "", err
	}
	claims, err := json.Marshal(tokenClaims{
		Iss: TokenIssuer,
		Sub: subjectPrefix + ns + ":" + sa,
		Aud: []string{TokenAudience},
		Exp: now.Add(ttl).Unix(),
		Iat: now.Unix(),
	})
	if err != nil {
		return "", err
	}
	signed := b64(header) + "." + b64(claims)
	digest := sha256.Sum256([]byte(signed))
	r, s, err := ecdsa.Sign(rand.Reader, a.tokenKey, digest[:])
	if err != nil {
		return "", err
	}
	// JWS ES256 signatures are R and S, each 32 bytes big-endian (RFC 7518 §3.4).
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return signed + "." + b64(sig), nil
}

// VerifyBootstrapToken checks a bootstrap token's signature, issuer,
// audience and expiry, and returns the namespace and service account it
// was minted for. Every error wraps ErrInvalidToken and never contains the
// token.
func (a *Authority) VerifyBootstrapToken(token string) (ns, sa string, err error) {
	fail := func(why string) (string, string, error) {
		return "", "", fmt.Errorf("%w: %s", ErrInvalidToken, why)
	}
	if len(token) > maxTokenBytes {
		return fail("too long")
	}
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return fail("not a compact JWT")
	}
	var header tokenHeader
	if err := decodeJSON(parts[0], &header); err != nil {
		return fail("header: " + err.Error())
	}
	// Only the one algorithm we sign with: never "none", never HMAC.
	if header.Alg != "ES256" {
		return fail("algorithm " + strconv.Quote(header.Alg) + ", want ES256")
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil || len(sig) != 64 {
		return fail("malformed signature")
	}
	digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	r, s := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
	if !ecdsa.Verify(&a.tokenKey.PublicKey, digest[:], r, s) {
		return fail("signature does not verify with this CA's key")
	}
	var c tokenClaims
	if err := decodeJSON(parts[1], &c); err != nil {
		return fail("claims: " + err.Error())
	}
	switch {
	case c.Iss != TokenIssuer:
		return fail("issuer " + strconv.Quote(c.Iss) + ", want " + strconv.Quote(TokenIssuer))
	case !slices.Contains(c.Aud, TokenAudience):
		return fail("audience does not include " + strconv.Quote(TokenAudience))
	case c.Exp == 0:
		return fail("no expiry")
	case !a.opts.Now().Before(time.Unix(c.Exp, 0)):
		return fail("expired at " + time.Unix(c.Exp, 0).UTC().Format(time.RFC3339))
	}
	rest, ok := strings.CutPrefix(c.Sub, subjectPrefix)
	ns, sa, ok2 := strings.Cut(rest, ":")
	if !ok || !ok2 {
		return fail("subject is not system:serviceaccount:<namespace>:<service-account>")
	}
	if err := (spiffe.Identity{TrustDomain: spiffe.DefaultTrustDomain, Namespace: ns, ServiceAccount: sa}).Validate(); err != nil {
		return fail("subject: " + err.Error())
	}
	return ns, sa, nil
}

// deriveTokenKey derives the token signing key from the CA key with HKDF,
// so that it is stable across restarts and never the CA key itself.
func deriveTokenKey(caKey crypto.Signer) (*ecdsa.PrivateKey, error) {
	secret, err := x509.MarshalPKCS8PrivateKey(caKey)
	if err != nil {
		return nil, fmt.Errorf("derive token key: %w", err)
	}
	// A 32-byte string is a valid P-256 scalar unless it is zero or at least
	// the group order (odds about 2^-32); the next counter value then serves.
	for i := range 16 {
		scalar, err := hkdf.Key(sha256.New, secret, nil, tokenKeyInfo+" "+strconv.Itoa(i), 32)
		if err != nil {
			return nil, err
		}
		if key, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), scalar); err == nil {
			return key, nil
		}
	}
	return nil, errors.New("derive token key: no valid scalar")
}

// tokenKeyID names the signing key in the header, so a token from another
// CA is recognisable when debugging: a hash of the public key.
func (a *Authority) tokenKeyID() string {
	der, err := x509.MarshalPKIXPublicKey(&a.tokenKey.PublicKey)
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(der)
	return b64(sum[:12])
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func decodeJSON(part string, v any) error {
	raw, err := base64.RawURLEncoding.DecodeString(part)
	if err != nil {
		return errors.New("not base64url")
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return errors.New("not the expected JSON")
	}
	return nil
}
