package jwtauthn_test

import (
	"bytes"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

func TestValidRS256ES256AndEdDSATokensPassWithPayloadAndClaimHeaders(t *testing.T) {
	s := startStack(t)
	for _, k := range []signingKey{rsKey, esKey, edKey} {
		t.Run(string(k.alg), func(t *testing.T) {
			tok := sign(t, k, claims())
			a := s.get(t, "/productpage", bearer(tok), "X-Jwt-Sub: forged")
			if a.code != http.StatusOK || a.body != "app" {
				t.Fatalf("got %d %q, want 200 from the app", a.code, a.body)
			}
			h := s.app.lastHeaders()
			if got, want := h.Get("X-Jwt-Payload"), strings.Split(tok, ".")[1]; got != want {
				t.Errorf("x-jwt-payload = %q, want the token's payload segment %q", got, want)
			}
			if got := h.Values("X-Jwt-Sub"); len(got) != 1 || got[0] != "alice" {
				t.Errorf("x-jwt-sub = %q, want only the verified [alice] (the client's copy removed)", got)
			}
			if h.Get("X-Jwt-Team") != "blue" || h.Get("X-Jwt-Admin") != "true" {
				t.Errorf("nested and boolean claims: team %q admin %q", h.Get("X-Jwt-Team"), h.Get("X-Jwt-Admin"))
			}
			if h.Get("Authorization") != "" {
				t.Error("the token was forwarded although the provider does not set forward")
			}
		})
	}
}

func TestBadTokensAreRefusedWithEnvoysAnswer(t *testing.T) {
	s := startStack(t)
	now := time.Now().Unix()
	noneHeader := b64(`{"alg":"none","typ":"JWT"}`)
	payload := b64(`{"iss":"https://issuer.example","sub":"alice","aud":"bookinfo"}`)
	good := sign(t, rsKey, claims())
	parts := strings.Split(good, ".")
	tampered := parts[0] + "." + b64(`{"iss":"https://issuer.example","sub":"root","aud":"bookinfo"}`) + "." + parts[2]
	unknownKid := signingKey{kid: "nobody", alg: jose.RS256, key: rsKey2.key}
	for _, c := range []struct {
		name, token string
		code        int
		body        string
	}{
		{"alg none without signature", noneHeader + "." + payload + ".", 401, "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"},
		{"alg none with a signature", noneHeader + "." + payload + "." + b64("sig"), 401, "Jwt header [alg] is not supported"},
		{"wrong issuer", sign(t, rsKey, claims(func(c map[string]any) { c["iss"] = "https://evil.example" })), 401, "Jwt issuer is not configured"},
		// Envoy answers a disallowed audience with 403, every other failure with 401.
		{"wrong audience", sign(t, esKey, claims(func(c map[string]any) { c["aud"] = "other" })), 403, "Audiences in Jwt are not allowed"},
		{"expired beyond the skew", sign(t, edKey, claims(func(c map[string]any) { c["exp"] = now - 120 })), 401, "Jwt is expired"},
		{"not yet valid beyond the skew", sign(t, rsKey, claims(func(c map[string]any) { c["nbf"] = now + 300 })), 401, "Jwt not yet valid"},
		{"bad signature", tampered, 401, "Jwt verification fails"},
		{"signed by a key the JWKS lacks", sign(t, unknownKid, claims()), 401, "Jwks doesn't have key to match kid or alg from Jwt"},
		{"truncated", good[:len(good)/2], 401, ""},
		{"not base64", "a$b.c$d.e$f", 401, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			a := s.get(t, "/productpage", bearer(c.token))
			if a.code != c.code || (c.body != "" && a.body != c.body) {
				t.Fatalf("got %d %q, want %d %q", a.code, a.body, c.code, c.body)
			}
			want := `Bearer realm="http://app.example/productpage", error="invalid_token"`
			if got := a.header.Get("Www-Authenticate"); got != want {
				t.Errorf("www-authenticate = %q, want %q", got, want)
			}
		})
	}
	// Within the 60 s default skew a just-expired token still passes, as in Envoy.
	if a := s.get(t, "/productpage", bearer(sign(t, rsKey, claims(func(c map[string]any) { c["exp"] = now - 10 })))); a.code != 200 {
		t.Errorf("token expired 10s ago (within the skew): %d %q", a.code, a.body)
	}
}

func TestHMACTokensFindNoKeyInAnAsymmetricJWKS(t *testing.T) {
	s := startStack(t)
	// HS256 keyed with the RSA public key's bytes: the classic confusion attack.
	pub := jwksOf(rsKey)
	sg, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: pub}, (&jose.SignerOptions{}).WithHeader("kid", "rsa-1"))
	if err != nil {
		t.Fatal(err)
	}
	obj, _ := sg.Sign([]byte(`{"iss":"https://issuer.example","aud":"bookinfo"}`))
	tok, _ := obj.CompactSerialize()
	a := s.get(t, "/productpage", bearer(tok))
	if a.code != 401 || a.body != "Jwks doesn't have key to match kid or alg from Jwt" {
		t.Fatalf("HS256 token: %d %q", a.code, a.body)
	}
}

func TestMissingTokenIs401UnlessAllowMissing(t *testing.T) {
	s := startStack(t)
	a := s.get(t, "/productpage?x=1")
	if a.code != 401 || a.body != "Jwt is missing" {
		t.Fatalf("no token on a required route: %d %q", a.code, a.body)
	}
	if got, want := a.header.Get("Www-Authenticate"), `Bearer realm="http://app.example/productpage?x=1"`; got != want {
		t.Errorf("www-authenticate = %q, want %q (no error for a missing token)", got, want)
	}
	if a := s.get(t, "/optional"); a.code != 200 {
		t.Errorf("no token with allow_missing: %d %q", a.code, a.body)
	}
	if a := s.get(t, "/named"); a.code != 200 {
		t.Errorf("no token on the route whose per-route requirement_name allows missing: %d %q", a.code, a.body)
	}
	// allow_missing forgives a missing token, never a bad one.
	bad := sign(t, rsKey, claims(func(c map[string]any) { c["aud"] = "other" }))
	if a := s.get(t, "/optional", bearer(bad)); a.code != 403 {
		t.Errorf("bad token with allow_missing: %d %q, want 403", a.code, a.body)
	}
	if a := s.get(t, "/public"); a.code != 200 {
		t.Errorf("rule without requirement: %d", a.code)
	}
}

func TestFromHeadersPrefixAndFromParamsFindTheToken(t *testing.T) {
	s := startStack(t)
	tok := sign(t, esKey, claims())
	if a := s.get(t, "/custom", "X-Token: Token "+tok); a.code != 200 {
		t.Fatalf("x-token with prefix: %d %q", a.code, a.body)
	}
	if s.app.lastHeaders().Get("X-Token") != "Token "+tok {
		t.Error("forward: true, but the token header did not reach the app")
	}
	if a := s.get(t, "/custom?tok="+tok); a.code != 200 {
		t.Fatalf("tok query parameter: %d %q", a.code, a.body)
	}
	if a := s.get(t, "/custom", bearer(tok)); a.code != 401 || a.body != "Jwt is missing" {
		t.Fatalf("Authorization is not among custom's locations: %d %q", a.code, a.body)
	}
	if a := s.get(t, "/productpage?access_token="+tok); a.code != 200 {
		t.Fatalf("default access_token parameter: %d %q", a.code, a.body)
	}
}

func TestPerRouteDisabledSkipsVerification(t *testing.T) {
	s := startStack(t)
	if a := s.get(t, "/disabled"); a.code != 200 {
		t.Fatalf("disabled route without token: %d %q", a.code, a.body)
	}
	if a := s.get(t, "/disabled", bearer("garbage")); a.code != 200 {
		t.Fatalf("disabled route with a bad token: %d %q", a.code, a.body)
	}
}

func TestKeyRotatedInAtTheIssuerIsPickedUpByKid(t *testing.T) {
	s := startStack(t, rsKey)
	if a := s.get(t, "/productpage", bearer(sign(t, rsKey, claims()))); a.code != 200 {
		t.Fatalf("before rotation: %d %q", a.code, a.body)
	}
	s.jwks.set(rsKey, rsKey2)
	newTok := sign(t, rsKey2, claims())
	// The cache (600 s) still holds the old set; the unknown kid triggers a refetch, at most every 5 s.
	eventually(t, "a token signed with the new key passes", func() bool {
		return s.get(t, "/productpage", bearer(newTok)).code == 200
	})
	if n := s.jwks.fetches.Load(); n > 3 {
		t.Errorf("%d JWKS fetches for one rotation; the unknown-kid refetch is not rate limited", n)
	}
}

func TestRotatedOutKeyFailsOnceTheCacheExpires(t *testing.T) {
	s := startStack(t, rsKey)
	old := sign(t, rsKey, claims())
	if a := s.get(t, "/short", bearer(old)); a.code != 200 {
		t.Fatalf("before rotation: %d %q", a.code, a.body)
	}
	s.jwks.set(rsKey2)
	eventually(t, "the old key's token is refused after the 1 s cache expires", func() bool {
		a := s.get(t, "/short", bearer(old))
		return a.code == 401 && a.body == "Jwks doesn't have key to match kid or alg from Jwt"
	})
	if a := s.get(t, "/short", bearer(sign(t, rsKey2, claims()))); a.code != 200 {
		t.Fatalf("new key after rotation: %d %q", a.code, a.body)
	}
}

func TestJWKSServerDownRefusesTokens(t *testing.T) {
	s := startStack(t)
	a := s.get(t, "/down", bearer(sign(t, rsKey, claims())))
	if a.code != 401 || a.body != "Jwks remote fetch is failed" {
		t.Fatalf("JWKS unreachable: %d %q", a.code, a.body)
	}
	// A server that answers with an error is as good as down.
	s.jwks.srv.Config.Handler = http.NotFoundHandler()
	b := s.get(t, "/short", bearer(sign(t, rsKey, claims())))
	if b.code != 401 || b.body != "Jwks remote fetch is failed" {
		t.Fatalf("JWKS answering 404: %d %q", b.code, b.body)
	}
}

func TestNoTokenIsLogged(t *testing.T) {
	var buf bytes.Buffer
	prev := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(&syncWriter{w: &buf}, &slog.HandlerOptions{Level: slog.LevelDebug})))
	t.Cleanup(func() { slog.SetDefault(prev) })
	s := startStack(t)
	tok := sign(t, rsKey, claims())
	s.get(t, "/productpage", bearer(tok))
	s.get(t, "/down", bearer(tok))
	s.get(t, "/productpage", bearer(tok[:len(tok)-4]))
	out := buf.String()
	if out == "" {
		t.Fatal("nothing logged: the JWKS failure should be logged at debug")
	}
	for _, secret := range append(strings.Split(tok, "."), tok) {
		if strings.Contains(out, secret) {
			t.Fatalf("the log holds a token or part of one:\n%s", out)
		}
	}
}
