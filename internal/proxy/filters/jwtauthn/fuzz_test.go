package jwtauthn

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net/http"
	"strings"
	"testing"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/trellis-mesh/trellis/internal/proxy/filters"
	"github.com/trellis-mesh/trellis/internal/proxy/stats"
	"github.com/trellis-mesh/trellis/internal/proxy/streaminfo"
)

// Fixed keys, so that the committed seed corpus (testdata/fuzz/FuzzJWT) holds tokens that verify.
var (
	fuzzEd = ed25519.NewKeyFromSeed([]byte("trellis-jwt-fuzz-ed25519-seed-32"))
	fuzzEC = func() *ecdsa.PrivateKey {
		k, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), sha256.New().Sum([]byte("trellis-jwt-fuzz-p256"))[:32])
		if err != nil {
			panic(err)
		}
		return k
	}()
)

func fuzzJWKS() []byte {
	b, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{
		{Key: fuzzEd.Public(), KeyID: "ed", Algorithm: "EdDSA"},
		{Key: &fuzzEC.PublicKey, KeyID: "ec", Algorithm: "ES256"},
	}})
	return b
}

func fuzzSign(tb testing.TB, alg jose.SignatureAlgorithm, key any, kid, payload string) string {
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, (&jose.SignerOptions{}).WithHeader("kid", kid))
	if err != nil {
		tb.Fatal(err)
	}
	obj, err := s.Sign([]byte(payload))
	if err != nil {
		tb.Fatal(err)
	}
	out, _ := obj.CompactSerialize()
	return out
}

// signedByFuzzKeys checks a token's signature with the standard library alone, independently of
// the verifier under test.
func signedByFuzzKeys(raw string) bool {
	i := strings.LastIndexByte(raw, '.')
	if i < 0 {
		return false
	}
	input, sigB64 := raw[:i], raw[i+1:]
	sig, err := base64.RawURLEncoding.DecodeString(sigB64)
	if err != nil {
		return false
	}
	h, _, _ := strings.Cut(input, ".")
	hj, err := base64.RawURLEncoding.DecodeString(h)
	if err != nil {
		return false
	}
	var hdr struct{ Alg string }
	if json.Unmarshal(hj, &hdr) != nil {
		return false
	}
	switch hdr.Alg {
	case "EdDSA":
		return ed25519.Verify(fuzzEd.Public().(ed25519.PublicKey), []byte(input), sig)
	case "ES256":
		if len(sig) != 64 {
			return false
		}
		d := sha256.Sum256([]byte(input))
		return ecdsa.Verify(&fuzzEC.PublicKey, d[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:]))
	}
	return false
}

// FuzzJWT feeds arbitrary tokens to the parser, the signature check and the whole filter (with a
// local JWKS): nothing may panic, and nothing the standard library does not verify as signed by
// the JWKS's keys may pass.
func FuzzJWT(f *testing.F) {
	ks, st := parseJWKS(fuzzJWKS())
	if st != OK {
		f.Fatal(st)
	}
	cfg := &Config{}
	p := &provider{name: "p", headers: []headerLocation{{name: "Authorization", prefix: "Bearer "}}, local: ks,
		cache: newTokenCache(10, 4096), skew: 60, payloadInMetadata: "iss", forwardPayloadHeader: "X-Payload",
		claimHeaders: []claimHeader{{header: "X-Sub", claim: "sub"}, {header: "X-Deep", claim: "a.b.c"}}}
	cfg.providers = []*provider{p}
	cfg.rules = []rule{{match: routeMatch{kind: pathPrefix, value: "/"}, req: &providerReq{p: p, ext: newExtractor(p)}}}
	flt := cfg.Build(filters.Env{Stats: stats.NewStore(), StatPrefix: "fuzz"}).(*Filter)

	f.Add(fuzzSign(f, jose.EdDSA, fuzzEd, "ed", `{"iss":"a","sub":"b","exp":4102444800}`))
	f.Add(fuzzSign(f, jose.ES256, fuzzEC, "ec", `{"iss":"a","aud":["x","y"],"a":{"b":{"c":1.5}}}`))
	f.Add(b64url(`{"alg":"none"}`) + "." + b64url(`{"sub":"root"}`) + ".")
	f.Add(b64url(`{"alg":"none"}`) + "." + b64url(`{"sub":"root"}`) + "." + b64url("x"))
	f.Add(b64url(`{"alg":"HS256","kid":"ed"}`) + "." + b64url(`{}`) + "." + b64url("0123456789abcdef0123456789abcdef"))
	f.Add("eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0")
	f.Add("!!!.???.***")
	f.Add(b64url(`{"alg":"EdDSA"}`) + "." + b64url(strings.Repeat(`{"a":`, 200)+"1"+strings.Repeat("}", 200)) + "." + b64url(strings.Repeat("s", 64)))
	f.Add(b64url(`{"alg":"ES256"}`) + "." + b64url(`{"exp":-1,"nbf":1e300,"aud":[1]}`) + "." + b64url("sig"))
	f.Add(strings.Repeat("A", 6000) + "." + strings.Repeat("B", 6000) + "." + strings.Repeat("C", 100))

	f.Fuzz(func(t *testing.T, raw string) {
		tok, st := parseToken(raw)
		if st != OK {
			if tok != nil {
				t.Fatal("a token came back with a failure status")
			}
		} else {
			_ = tok.timeStatus(1, 60)
			_ = tok.claimString("a.b.c")
			if ks.verify(tok) == OK && !signedByFuzzKeys(raw) {
				t.Fatalf("accepted a token the keys did not sign: %q", raw)
			}
		}
		h := http.Header{"Authorization": {"Bearer " + raw}}
		x := &filters.Exchange{Method: "GET", Path: "/", Authority: "a", Headers: h, Info: &streaminfo.Info{}}
		if flt.OnRequest(context.Background(), x, nil) == filters.Continue && !signedByFuzzKeys(tokenAfter("Bearer "+raw, len("Bearer "))) {
			t.Fatalf("the filter let through a token the keys did not sign: %q", raw)
		}
	})
}

func b64url(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

func TestVerifiedPayloadGoesToDynamicMetadataAndClaimHeaders(t *testing.T) {
	ks, _ := parseJWKS(fuzzJWKS())
	p := &provider{name: "p", issuer: "https://issuer.example", headers: []headerLocation{{name: "Authorization", prefix: "Bearer "}},
		local: ks, cache: newTokenCache(10, 4096), skew: 60, payloadInMetadata: "https://issuer.example", headerInMetadata: "hdr",
		forwardPayloadHeader: "X-Payload", padPayload: true}
	cfg := &Config{providers: []*provider{p}}
	cfg.rules = []rule{{match: routeMatch{kind: pathPrefix, value: "/"}, req: &providerReq{p: p, ext: newExtractor(p)}}}
	store := stats.NewStore()
	flt := cfg.Build(filters.Env{Stats: store, StatPrefix: "in"})
	tok := fuzzSign(t, jose.EdDSA, fuzzEd, "ed", `{"iss":"https://issuer.example","sub":"alice","groups":["a","b"],"n":7}`)
	for i := range 2 { // the second time from the verified-token cache
		x := &filters.Exchange{Method: "GET", Path: "/", Authority: "a", Headers: http.Header{"Authorization": {"Bearer " + tok}}, Info: &streaminfo.Info{}}
		if flt.OnRequest(context.Background(), x, nil) != filters.Continue {
			t.Fatalf("request %d refused: %v", i, x.Reply())
		}
		md := x.Info.DynamicMetadata[FilterName].GetFields()
		payload := md["https://issuer.example"].GetStructValue().GetFields()
		if payload["sub"].GetStringValue() != "alice" || payload["iss"].GetStringValue() != "https://issuer.example" ||
			len(payload["groups"].GetListValue().GetValues()) != 2 || payload["n"].GetNumberValue() != 7 {
			t.Fatalf("request %d: payload metadata %v", i, payload)
		}
		if md["hdr"].GetStructValue().GetFields()["kid"].GetStringValue() != "ed" {
			t.Errorf("header metadata %v", md["hdr"])
		}
		if v := x.Headers.Get("X-Payload"); len(v)%4 != 0 || !strings.HasPrefix(v, strings.Split(tok, ".")[1]) {
			t.Errorf("padded payload header %q", v)
		}
	}
	if store.Counter("http.in.jwt_authn.jwt_cache_hit").Value() != 1 || store.Counter("http.in.jwt_authn.allowed").Value() != 2 {
		t.Error("cache hit / allowed counters")
	}
}

func TestParseStatusesFollowJwtVerifyLib(t *testing.T) {
	for _, c := range []struct {
		raw  string
		want Status
	}{
		{"a.b", JwtBadFormat},
		{"a..c", JwtBadFormat},
		{"a.b.c.d", JwtBadFormat},
		{"!.b.c", JwtHeaderParseErrorBadBase64},
		{b64url("[1]") + ".b.c", JwtHeaderParseErrorBadJSON},
		{b64url(`{"alg":1}`) + ".b.c", JwtHeaderBadAlg},
		{b64url(`{"alg":"none"}`) + ".b.c", JwtHeaderNotImplementedAlg},
		{b64url(`{"alg":"RS256","kid":7}`) + ".b.c", JwtHeaderBadKid},
		{b64url(`{"alg":"RS256"}`) + ".!.c", JwtPayloadParseErrorBadBase64},
		{b64url(`{"alg":"RS256"}`) + "." + b64url("x") + ".c", JwtPayloadParseErrorBadJSON},
		{b64url(`{"alg":"RS256"}`) + "." + b64url(`{"iss":1}`) + ".c", JwtPayloadParseErrorIssNotString},
		{b64url(`{"alg":"RS256"}`) + "." + b64url(`{"exp":"soon"}`) + ".c", JwtPayloadParseErrorExpNotInteger},
		{b64url(`{"alg":"RS256"}`) + "." + b64url(`{"nbf":-5}`) + ".c", JwtPayloadParseErrorNbfOutOfRange},
		{b64url(`{"alg":"RS256"}`) + "." + b64url(`{"aud":[1]}`) + ".c", JwtPayloadParseErrorAudNotString},
		{b64url(`{"alg":"RS256"}`) + "." + b64url(`{}`) + ".!", JwtSignatureParseErrorBadBase64},
		{b64url(`{"alg":"RS256"}`) + "." + b64url(`{"aud":"x"}`) + "." + b64url("s"), OK},
	} {
		if _, got := parseToken(c.raw); got != c.want {
			t.Errorf("%q: %v, want %v", c.raw, got, c.want)
		}
	}
}

// BenchmarkRequestWithCachedToken is the hot path: a token verified before, from the cache.
func BenchmarkRequestWithCachedToken(b *testing.B) {
	ks, _ := parseJWKS(fuzzJWKS())
	p := &provider{name: "p", issuer: "a", headers: []headerLocation{{name: "Authorization", prefix: "Bearer "}},
		local: ks, cache: newTokenCache(10, 4096), skew: 60, payloadInMetadata: "a"}
	cfg := &Config{providers: []*provider{p}}
	cfg.rules = []rule{{match: routeMatch{kind: pathPrefix, value: "/"}, req: &providerReq{p: p, ext: newExtractor(p)}}}
	flt := cfg.Build(filters.Env{Stats: stats.NewStore(), StatPrefix: "b"})
	tok := fuzzSign(b, jose.ES256, fuzzEC, "ec", `{"iss":"a","sub":"b","exp":4102444800}`)
	auth := []string{"Bearer " + tok}
	h := http.Header{}
	x := &filters.Exchange{Method: "GET", Path: "/", Authority: "a", Headers: h, Info: &streaminfo.Info{}}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		h["Authorization"] = auth
		x.Info.DynamicMetadata = nil
		if flt.OnRequest(ctx, x, nil) != filters.Continue {
			b.Fatal("refused")
		}
	}
}
