package ca

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestBootstrapTokenCarriesTheContractClaimsAndVerifies(t *testing.T) {
	now := time.Unix(1_900_000_000, 0)
	a := newDirAuthority(t, Options{Now: func() time.Time { return now }})
	token, err := a.MintBootstrapToken("shop", "cart", 2*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("%d parts", len(parts))
	}
	var header map[string]any
	var claims map[string]any
	decode(t, parts[0], &header)
	decode(t, parts[1], &claims)
	if header["alg"] != "ES256" || header["typ"] != "JWT" {
		t.Fatalf("header %v", header)
	}
	if claims["iss"] != "trellis-ca" || claims["sub"] != "system:serviceaccount:shop:cart" ||
		claims["exp"] != float64(now.Add(2*time.Hour).Unix()) {
		t.Fatalf("claims %v", claims)
	}
	if aud, _ := claims["aud"].([]any); len(aud) != 1 || aud[0] != "trellis-ca" {
		t.Fatalf("aud %v", claims["aud"])
	}
	ns, sa, err := a.VerifyBootstrapToken(token)
	if err != nil || ns != "shop" || sa != "cart" {
		t.Fatalf("verify: %q %q %v", ns, sa, err)
	}
}

func TestBootstrapTokensAreRefusedWhenExpiredForgedOrAltered(t *testing.T) {
	now := time.Unix(1_900_000_000, 0)
	clock := func() time.Time { return now }
	dir := t.TempDir()
	a, err := LoadOrCreateDir(dir, Options{Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	other := newDirAuthority(t, Options{Now: clock})
	good, err := a.MintBootstrapToken("default", "sleep", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	forged, err := other.MintBootstrapToken("default", "sleep", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	later, err := LoadDir(dir, Options{Now: func() time.Time { return now.Add(time.Hour) }})
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(good, ".")
	claims := map[string]any{"iss": "trellis-ca", "aud": []string{"trellis-ca"}, "sub": "system:serviceaccount:default:admin", "exp": now.Add(time.Hour).Unix()}
	for name, tc := range map[string]struct {
		verifier *Authority
		token    string
	}{
		"expired":                 {later, good},
		"signed by another CA":    {a, forged},
		"claims swapped":          {a, parts[0] + "." + encode(t, claims) + "." + parts[2]},
		"alg none":                {a, encode(t, map[string]string{"alg": "none"}) + "." + parts[1] + "."},
		"alg HS256":               {a, encode(t, map[string]string{"alg": "HS256"}) + "." + parts[1] + "." + parts[2]},
		"two parts":               {a, parts[0] + "." + parts[1]},
		"empty":                   {a, ""},
		"wrong issuer":            {a, a.signForTest(t, with(claims, "iss", "kubernetes"))},
		"wrong audience":          {a, a.signForTest(t, with(claims, "aud", []string{"istio-ca"}))},
		"no expiry":               {a, a.signForTest(t, with(claims, "exp", 0))},
		"not a service account":   {a, a.signForTest(t, with(claims, "sub", "alice"))},
		"subject with extra part": {a, a.signForTest(t, with(claims, "sub", "system:serviceaccount:a:b:c"))},
		"too long":                {a, good + strings.Repeat("A", maxTokenBytes)},
	} {
		ns, sa, err := tc.verifier.VerifyBootstrapToken(tc.token)
		if !errors.Is(err, ErrInvalidToken) {
			t.Errorf("%s: got %q %q %v, want ErrInvalidToken", name, ns, sa, err)
			continue
		}
		if tc.token != "" && strings.Contains(err.Error(), tc.token) {
			t.Errorf("%s: the error contains the token", name)
		}
	}
	// The hand-signed helper itself yields tokens that verify: the refusals
	// above are about the claims, not the helper.
	if _, _, err := a.VerifyBootstrapToken(a.signForTest(t, claims)); err != nil {
		t.Fatalf("hand-signed token with good claims: %v", err)
	}
}

func TestMintBootstrapTokenRefusesBadInput(t *testing.T) {
	a := newDirAuthority(t, Options{})
	for _, tc := range []struct {
		ns, sa string
		ttl    time.Duration
	}{{"", "sa", time.Hour}, {"ns", "", time.Hour}, {"ns", "a:b", time.Hour}, {"ns", "sa", 0}} {
		if _, err := a.MintBootstrapToken(tc.ns, tc.sa, tc.ttl); err == nil {
			t.Errorf("minted for %+v", tc)
		}
	}
}

func FuzzVerifyBootstrapToken(f *testing.F) {
	a, err := LoadOrCreateDir(f.TempDir(), Options{})
	if err != nil {
		f.Fatal(err)
	}
	good, err := a.MintBootstrapToken("default", "sleep", time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add("eyJhbGciOiJub25lIn0.e30.")
	f.Add("a.b.c")
	f.Fuzz(func(t *testing.T, token string) {
		ns, sa, err := a.VerifyBootstrapToken(token)
		if err != nil {
			if !errors.Is(err, ErrInvalidToken) {
				t.Fatalf("error %v does not wrap ErrInvalidToken", err)
			}
			return
		}
		// Only tokens this CA signed verify; the fuzzer cannot forge ES256.
		if ns != "default" || sa != "sleep" {
			t.Fatalf("verified a token for %s/%s", ns, sa)
		}
	})
}

// signForTest signs arbitrary claims with the CA's token key, to test the
// claim checks apart from the signature check.
func (a *Authority) signForTest(t *testing.T, claims map[string]any) string {
	t.Helper()
	signed := encode(t, map[string]string{"alg": "ES256", "typ": "JWT"}) + "." + encode(t, claims)
	digest := sha256.Sum256([]byte(signed))
	r, s, err := ecdsa.Sign(rand.Reader, a.tokenKey, digest[:])
	if err != nil {
		t.Fatal(err)
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return signed + "." + base64.RawURLEncoding.EncodeToString(sig)
}

func with(m map[string]any, k string, v any) map[string]any {
	out := map[string]any{}
	for key, val := range m {
		out[key] = val
	}
	out[k] = v
	return out
}

func encode(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

func decode(t *testing.T, part string, v any) {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(part)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatal(err)
	}
}
