package controlplane

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/rest"

	"github.com/trellis-mesh/trellis/internal/inject"
)

// The webhook needs the cluster (namespace labels, ProxyConfigs) and the CA
// (its certificate): without either, Run refuses to start and says why.
func TestWebhookWithoutKubernetesOrCAIsRefused(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts Options
		want string
	}{
		{"config dir", Options{ConfigDir: t.TempDir(), CAAddress: "127.0.0.1:0", CADir: t.TempDir()}, "needs the Kubernetes source"},
		{"no CA", Options{Kubernetes: &rest.Config{Host: "https://127.0.0.1:1"}}, "needs the CA"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.WebhookAddress = "127.0.0.1:0"
			tc.opts.XDSAddress = "127.0.0.1:0"
			tc.opts.Logger = slog.New(slog.DiscardHandler)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			err := Run(ctx, tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Run: %v, want an error saying %q", err, tc.want)
			}
		})
	}
}

func TestInjectParamsDefaultToTheIstiodServiceOfTheIstioNamespace(t *testing.T) {
	p := (&Options{IstioNamespace: "mesh"}).injectParams()
	if p.XDSAddress != "istiod.mesh.svc:15010" || p.CAAddress != "istiod.mesh.svc:15012" {
		t.Errorf("addresses %s, %s; want istiod.mesh.svc:15010 and :15012", p.XDSAddress, p.CAAddress)
	}
	if p.ProxyImage == "" || p.TrustDomain != "cluster.local" {
		t.Errorf("image %q, trust domain %q: want inject's defaults", p.ProxyImage, p.TrustDomain)
	}
	p = (&Options{Inject: inject.Params{ProxyImage: "my/proxy:1", XDSAddress: "cp:15010"}}).injectParams()
	if p.ProxyImage != "my/proxy:1" || p.XDSAddress != "cp:15010" || p.CAAddress != "istiod.istio-system.svc:15012" {
		t.Errorf("given params not kept: %+v", p)
	}
}
