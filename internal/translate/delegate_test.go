package translate

import (
	"testing"

	networking "istio.io/api/networking/v1alpha3"
)

// A delegate's match narrows its root's; combinations that cannot both
// hold are dropped, as Istio does.
func TestDelegateMatchIsRootAndDelegate(t *testing.T) {
	for _, tc := range []struct {
		name      string
		root, del *networking.HTTPMatchRequest
		wantNil   bool
		check     func(*networking.HTTPMatchRequest) bool
	}{
		{"uri under root prefix", &networking.HTTPMatchRequest{Uri: prefix("/api")}, &networking.HTTPMatchRequest{Uri: exact("/api/v1")}, false,
			func(m *networking.HTTPMatchRequest) bool { return m.GetUri().GetExact() == "/api/v1" }},
		{"uri outside root prefix", &networking.HTTPMatchRequest{Uri: prefix("/api")}, &networking.HTTPMatchRequest{Uri: prefix("/web")}, true, nil},
		{"root exact, delegate other", &networking.HTTPMatchRequest{Uri: exact("/a")}, &networking.HTTPMatchRequest{Uri: exact("/b")}, true, nil},
		{"headers united", &networking.HTTPMatchRequest{Headers: map[string]*networking.StringMatch{"x-a": exact("1")}},
			&networking.HTTPMatchRequest{Headers: map[string]*networking.StringMatch{"x-b": exact("2")}}, false,
			func(m *networking.HTTPMatchRequest) bool { return len(m.GetHeaders()) == 2 }},
		{"same header, other value", &networking.HTTPMatchRequest{Headers: map[string]*networking.StringMatch{"x-a": exact("1")}},
			&networking.HTTPMatchRequest{Headers: map[string]*networking.StringMatch{"x-a": exact("2")}}, true, nil},
		{"method from root", &networking.HTTPMatchRequest{Method: exact("GET")}, &networking.HTTPMatchRequest{Uri: prefix("/x")}, false,
			func(m *networking.HTTPMatchRequest) bool {
				return m.GetMethod().GetExact() == "GET" && m.GetUri().GetPrefix() == "/x"
			}},
		{"ports differ", &networking.HTTPMatchRequest{Port: 80}, &networking.HTTPMatchRequest{Port: 8080}, true, nil},
	} {
		got := mergeMatch(tc.root, tc.del)
		switch {
		case tc.wantNil && got != nil:
			t.Errorf("%s: merged to %v, want no match", tc.name, got)
		case !tc.wantNil && (got == nil || !tc.check(got)):
			t.Errorf("%s: merged to %v", tc.name, got)
		}
	}
}
