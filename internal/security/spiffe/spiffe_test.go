package spiffe

import (
	"net/url"
	"testing"
)

func TestIdentityRoundTripsThroughIDPrincipalAndURL(t *testing.T) {
	id := Identity{TrustDomain: "cluster.local", Namespace: "default", ServiceAccount: "sleep"}
	if got, want := id.String(), "spiffe://cluster.local/ns/default/sa/sleep"; got != want {
		t.Fatalf("String() = %q, want %q", got, want)
	}
	if got, want := id.Principal(), "cluster.local/ns/default/sa/sleep"; got != want {
		t.Fatalf("Principal() = %q, want %q", got, want)
	}
	if got := id.URL().String(); got != id.String() {
		t.Fatalf("URL() = %q, want %q", got, id.String())
	}
	for _, parse := range []func() (Identity, error){
		func() (Identity, error) { return Parse(id.String()) },
		func() (Identity, error) { return ParsePrincipal(id.Principal()) },
		func() (Identity, error) { return FromURL(id.URL()) },
	} {
		got, err := parse()
		if err != nil || got != id {
			t.Fatalf("parsed %+v, %v; want %+v", got, err, id)
		}
	}
}

func TestParseRefusesIDsOfAnotherShape(t *testing.T) {
	for _, s := range []string{
		"",
		"cluster.local/ns/default/sa/sleep", // no scheme
		"spiffe://cluster.local/ns/default/sa/",
		"spiffe://cluster.local/ns//sa/sleep",
		"spiffe:///ns/default/sa/sleep",
		"spiffe://cluster.local/ns/default/sa/sleep/extra",
		"spiffe://cluster.local/sa/sleep/ns/default",
		"spiffe://Cluster.local/ns/default/sa/sleep", // trust domains are lowercase
		"spiffe://cluster.local:8443/ns/default/sa/sleep",
		"spiffe://cluster.local/ns/../sa/sleep",
		"spiffe://cluster.local/ns/default/sa/sleep?x=1",
		"spiffe://cluster.local/ns/def%2Fault/sa/sleep",
		"SPIFFE://cluster.local/ns/default/sa/sleep",
	} {
		if id, err := Parse(s); err == nil {
			t.Errorf("Parse(%q) = %+v, want an error", s, id)
		}
	}
}

func TestFromURLRefusesUserinfoAndFragments(t *testing.T) {
	for _, raw := range []string{
		"spiffe://user@cluster.local/ns/default/sa/sleep",
		"spiffe://cluster.local/ns/default/sa/sleep#frag",
		"https://cluster.local/ns/default/sa/sleep",
	} {
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		if id, err := FromURL(u); err == nil {
			t.Errorf("FromURL(%q) = %+v, want an error", raw, id)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add("spiffe://cluster.local/ns/default/sa/sleep")
	f.Add("spiffe://td/ns/a/sa/b/c")
	f.Fuzz(func(t *testing.T, s string) {
		id, err := Parse(s)
		if err != nil {
			return
		}
		// Whatever parses must be written back exactly and validate.
		if id.String() != s {
			t.Fatalf("Parse(%q).String() = %q", s, id.String())
		}
		if err := id.Validate(); err != nil {
			t.Fatalf("Parse(%q) accepted an invalid identity: %v", s, err)
		}
	})
}
