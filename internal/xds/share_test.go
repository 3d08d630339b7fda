package xds

import (
	"testing"

	networking "istio.io/api/networking/v1alpha3"

	"github.com/trellis-mesh/trellis/internal/model"
)

// Proxies may share a translation only where translate.Build cannot tell
// them apart; the key must separate everything it reads.
func TestTranslateShareKeySeparatesWhatTranslationReads(t *testing.T) {
	mesh := model.NewSnapshot(&model.Config{WorkloadEntries: []*model.WorkloadEntry{{
		Meta: model.Meta{Kind: "WorkloadEntry", Namespace: "default", Name: "reviews-v1"},
		Spec: &networking.WorkloadEntry{Address: "127.0.1.3", Labels: map[string]string{"app": "reviews"}},
	}}})
	proxy := func(id string, mode model.InterceptionMode, labels map[string]string) *model.Proxy {
		t.Helper()
		p, err := model.ParseProxy(id)
		if err != nil {
			t.Fatal(err)
		}
		p.Interception, p.Labels = mode, labels
		return p
	}
	app := map[string]string{"app": "client"}
	base := proxy("sidecar~10.9.0.1~client-a.default~default.svc.cluster.local", model.InterceptRedirect, app)
	for _, tc := range []struct {
		name  string
		other *model.Proxy
		share bool
	}{
		{"other pod and IP, same namespace and labels", proxy("sidecar~10.9.0.2~client-b.default~default.svc.cluster.local", model.InterceptRedirect, app), true},
		{"other namespace", proxy("sidecar~10.9.0.2~client-b.other~other.svc.cluster.local", model.InterceptRedirect, app), false},
		{"other labels", proxy("sidecar~10.9.0.2~client-b.default~default.svc.cluster.local", model.InterceptRedirect, map[string]string{"app": "client", "version": "v2"}), false},
		{"local mode binds its own IP", proxy("sidecar~10.9.0.2~client-b.default~default.svc.cluster.local", model.InterceptNone, app), false},
		{"a workload at its IP has inbound listeners", proxy("sidecar~127.0.1.3~client-b.default~default.svc.cluster.local", model.InterceptRedirect, app), false},
		{"no app label: the name is the canonical service", proxy("sidecar~10.9.0.2~client-b.default~default.svc.cluster.local", model.InterceptRedirect, nil), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, okA := TranslateShareKey(mesh, base)
			b, okB := TranslateShareKey(mesh, tc.other)
			if !okA || !okB {
				t.Fatalf("sidecars not shareable: %v %v", okA, okB)
			}
			if (a == b) != tc.share {
				t.Fatalf("keys %q and %q: shared = %v, want %v", a, b, a == b, tc.share)
			}
		})
	}
	if _, ok := TranslateShareKey(mesh, proxy("router~10.9.0.9~gw.istio-system~istio-system.svc.cluster.local", model.InterceptRedirect, app)); ok {
		t.Fatal("a gateway is shared; gateways are translated on their own")
	}
}
