package hcm

import (
	"testing"
	"time"
)

// FuzzParseGRPCTimeout feeds the grpc-timeout parser what clients may send.
func FuzzParseGRPCTimeout(f *testing.F) {
	for _, s := range []string{"1S", "100m", "99999999H", "5u", "0n", "", "S", "-1S", "1x", "123456789S"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		d, ok := parseGRPCTimeout(v)
		if ok && (d < 0 || len(v) > 9) {
			t.Fatalf("%q parsed to %v", v, d)
		}
	})
}

func TestParseGRPCTimeout(t *testing.T) {
	for in, want := range map[string]time.Duration{"1S": time.Second, "250m": 250 * time.Millisecond, "2M": 2 * time.Minute, "10u": 10 * time.Microsecond} {
		if got, ok := parseGRPCTimeout(in); !ok || got != want {
			t.Errorf("%s: %v %v", in, got, ok)
		}
	}
	for _, bad := range []string{"", "S", "1", "1s", "123456789S", "-5S"} {
		if _, ok := parseGRPCTimeout(bad); ok {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestShadowAuthorityKeepsThePort(t *testing.T) {
	for in, want := range map[string]string{"reviews:9080": "reviews-shadow:9080", "reviews": "reviews-shadow", "[::1]:80": "[::1]-shadow:80"} {
		if got := shadowAuthority(in); got != want {
			t.Errorf("%s: %s", in, got)
		}
	}
}
