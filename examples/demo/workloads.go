package demo

import (
	"context"
	"fmt"
	"log/slog"
)

// Addresses of the demo in local mode; config/*.yaml say the same.
const (
	// GatewayURL is where the ingress gateway serves the product page.
	GatewayURL = "http://127.0.1.1:8080/"
	// ServicePort is the port of every demo service, as in bookinfo.
	ServicePort = 9080
	// outboundPort is Istio's outbound listener port, which apps use as
	// their explicit HTTP proxy in captureMode NONE.
	outboundPort = 15001
)

// Workload is one member of the demo mesh: what its proxy needs to know
// about itself, and the app behind it.
type Workload struct {
	Name           string // WorkloadEntry name, e.g. "reviews-v2"
	Namespace      string
	IP             string // own loopback address; the proxy binds it
	Labels         map[string]string
	ServiceAccount string
	// NodeID is the proxy's Istio node ID, e.g.
	// "sidecar~127.0.1.4~reviews-v2.default~default.svc.cluster.local".
	NodeID  string
	Gateway bool // a router (ingress gateway), not a sidecar
	App     *App // nil for the gateway, which is only a proxy
}

// Workloads describes the demo mesh, ordered by IP: the ingress gateway
// (127.0.1.1), productpage (.2), reviews v1, v2, v3 (.3 to .5) and ratings
// (.6). The app of the workload at 127.0.1.N listens on 127.0.0.1:1908N.
// Every call returns fresh values, so callers may change them.
func Workloads() []Workload {
	out := []Workload{{
		Name:           "istio-ingressgateway",
		Namespace:      "istio-system",
		IP:             "127.0.1.1",
		Labels:         map[string]string{"app": "istio-ingressgateway", "istio": "ingressgateway"},
		ServiceAccount: "istio-ingressgateway-service-account",
		NodeID:         "router~127.0.1.1~istio-ingressgateway.istio-system~istio-system.svc.cluster.local",
		Gateway:        true,
	}}
	for i, w := range []struct{ app, version string }{
		{"productpage", "v1"},
		{"reviews", "v1"},
		{"reviews", "v2"},
		{"reviews", "v3"},
		{"ratings", "v1"},
	} {
		n := i + 2
		ip := fmt.Sprintf("127.0.1.%d", n)
		name := w.app + "-" + w.version
		out = append(out, Workload{
			Name:           name,
			Namespace:      "default",
			IP:             ip,
			Labels:         map[string]string{"app": w.app, "version": w.version},
			ServiceAccount: "bookinfo-" + w.app,
			NodeID:         fmt.Sprintf("sidecar~%s~%s.default~default.svc.cluster.local", ip, name),
			App: &App{
				Name:       w.app,
				Version:    w.version,
				Listen:     fmt.Sprintf("127.0.0.1:%d", 19080+n),
				SidecarURL: fmt.Sprintf("http://%s:%d", ip, outboundPort),
			},
		})
	}
	return out
}

// RunApps runs every demo app (the gateway has none) until ctx is done. If
// one cannot start, for example because its port is taken, the others are
// stopped and the first error is returned.
func RunApps(ctx context.Context, log *slog.Logger) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, len(Workloads()))
	n := 0
	for _, w := range Workloads() {
		if w.App == nil {
			continue
		}
		app := *w.App
		app.Logger = log.With("app", app.ID())
		n++
		go func() {
			err := app.Run(ctx)
			if err != nil {
				cancel()
			}
			errs <- err
		}()
	}
	var first error
	for range n {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}
