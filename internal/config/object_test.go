package config

import (
	"fmt"
	"strings"
	"testing"
)

// vs is a VirtualService splitting reviews between two subsets, in JSON
// as the Kubernetes source serialises objects.
func vs(name string, v1, v2 int) []byte {
	return fmt.Appendf(nil, `{"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
 "metadata": {"name": %q, "namespace": "default"},
 "spec": {"hosts": ["reviews"], "http": [{"route": [
   {"destination": {"host": "reviews", "subset": "v1"}, "weight": %d},
   {"destination": {"host": "reviews", "subset": "v2"}, "weight": %d}]}]}}`, name, v1, v2)
}

// One resource from a non-file source is validated as a file's would be,
// and its errors name the source, the resource and the field, without the
// serialised object's line numbers.
func TestParseObjectValidatesLikeAFile(t *testing.T) {
	obj, _, err := ParseObject("kubernetes", vs("good", 50, 50))
	if err != nil || obj == nil {
		t.Fatalf("valid VirtualService: %v, %v", obj, err)
	}
	if m := obj.Meta(); m.Kind != "VirtualService" || m.Namespace != "default" || m.Name != "good" || m.Source.String() != "kubernetes" {
		t.Fatalf("meta = %+v", m)
	}
	_, _, err = ParseObject("kubernetes", vs("bad", 50, 40))
	want := "kubernetes: VirtualService default/bad: spec.http[0].route[1].weight: weights must sum to 100, got 90"
	if err == nil || err.Error() != want {
		t.Fatalf("err = %v, want %s", err, want)
	}
}

// Assemble leaves out only the resource a check across resources faults
// (the second ServiceEntry declaring a host) and serves the rest.
func TestAssembleLeavesOutOnlyTheConflictingResource(t *testing.T) {
	se := func(name string) *Object {
		t.Helper()
		o, _, err := ParseObject("kubernetes", []byte(`{"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
 "metadata": {"name": "`+name+`", "namespace": "default"},
 "spec": {"hosts": ["api.example.com"], "location": "MESH_EXTERNAL", "resolution": "DNS", "ports": [{"number": 443, "name": "tls", "protocol": "TLS"}]}}`))
		if err != nil {
			t.Fatal(err)
		}
		return o
	}
	good, _, err := ParseObject("kubernetes", vs("reviews", 50, 50))
	if err != nil {
		t.Fatal(err)
	}
	cfg, _, errs := Assemble(nil, []*Object{se("b"), se("a"), good})
	if len(cfg.ServiceEntries) != 1 || cfg.ServiceEntries[0].Name != "a" || len(cfg.VirtualServices) != 1 {
		t.Fatalf("config: %d ServiceEntries (%v), %d VirtualServices; want a and reviews", len(cfg.ServiceEntries), cfg.ServiceEntries, len(cfg.VirtualServices))
	}
	if len(errs) != 1 || errs[0].Name != "b" || !strings.Contains(errs[0].Error(), "already declared by ServiceEntry default/a") {
		t.Fatalf("errs = %v, want one about b", errs)
	}
}
