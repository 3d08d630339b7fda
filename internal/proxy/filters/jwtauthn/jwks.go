package jwtauthn

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/json"

	jose "github.com/go-jose/go-jose/v4"
)

// key is one usable public key of a JWKS.
type key struct {
	kid, alg string
	pub      any // *rsa.PublicKey, *ecdsa.PublicKey or ed25519.PublicKey
}

// keySet is a parsed JWKS. Keys that do not parse, or that are not RSA, EC or Ed25519 public keys
// (symmetric "oct" keys, X25519), are left out, as Envoy skips keys it cannot use.
type keySet struct {
	keys []key
}

// parseJWKS reads a JWKS document (RFC 7517) with go-jose, key by key.
func parseJWKS(doc []byte) (*keySet, Status) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(doc, &top); err != nil || top == nil {
		return nil, JwksParseError
	}
	raw, ok := top["keys"]
	if !ok {
		return nil, JwksNoKeys
	}
	var list []json.RawMessage
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, JwksBadKeys
	}
	ks := &keySet{}
	for _, r := range list {
		var jwk jose.JSONWebKey
		if err := jwk.UnmarshalJSON(r); err != nil {
			continue
		}
		pub := publicKey(jwk.Key)
		if pub == nil {
			continue
		}
		ks.keys = append(ks.keys, key{kid: jwk.KeyID, alg: jwk.Algorithm, pub: pub})
	}
	if len(ks.keys) == 0 {
		return nil, JwksNoValidKeys
	}
	return ks, OK
}

func publicKey(k any) any {
	switch k := k.(type) {
	case *rsa.PublicKey, *ecdsa.PublicKey, ed25519.PublicKey:
		return k
	case *rsa.PrivateKey:
		return &k.PublicKey
	case *ecdsa.PrivateKey:
		return &k.PublicKey
	case ed25519.PrivateKey:
		return k.Public()
	}
	return nil
}

// fits says whether k can check a signature made with alg: the key type and, for EC, the curve
// must be the algorithm's.
func fits(k *key, alg string) bool {
	switch pub := k.pub.(type) {
	case *rsa.PublicKey:
		return alg[0] == 'R' || alg[0] == 'P'
	case *ecdsa.PublicKey:
		switch alg {
		case "ES256":
			return pub.Curve == elliptic.P256()
		case "ES384":
			return pub.Curve == elliptic.P384()
		case "ES512":
			return pub.Curve == elliptic.P521()
		}
	case ed25519.PublicKey:
		return alg == "EdDSA"
	}
	return false
}

// verify is jwt_verify_lib's verifyJwtWithoutTimeChecking: a key is tried when its kid matches the
// token's (or either has none) and its alg, when it has one, is the token's; the signature is
// checked by go-jose, restricted to the token's algorithm. No candidate key gives
// JwksKidAlgMismatch, candidates that all fail JwtVerificationFail.
func (ks *keySet) verify(t *token) Status {
	var jws *jose.JSONWebSignature
	matched := false
	for i := range ks.keys {
		k := &ks.keys[i]
		if t.kid != "" && k.kid != "" && k.kid != t.kid {
			continue
		}
		if k.alg != "" && k.alg != t.alg {
			continue
		}
		if !fits(k, t.alg) {
			continue
		}
		matched = true
		if t.alg == "EdDSA" && len(t.sig) != ed25519.SignatureSize {
			return JwtEd25519SignatureWrongLength
		}
		if jws == nil {
			var err error
			if jws, err = jose.ParseSigned(t.raw, []jose.SignatureAlgorithm{jose.SignatureAlgorithm(t.alg)}); err != nil {
				return JwtVerificationFail
			}
		}
		if _, err := jws.Verify(k.pub); err == nil {
			return OK
		}
	}
	if matched {
		return JwtVerificationFail
	}
	return JwksKidAlgMismatch
}

// hasKid says whether a key with that kid is in the set.
func (ks *keySet) hasKid(kid string) bool {
	for i := range ks.keys {
		if ks.keys[i].kid == kid {
			return true
		}
	}
	return false
}
