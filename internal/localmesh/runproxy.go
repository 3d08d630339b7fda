package localmesh

import (
	"context"
	"log/slog"
	"maps"
	"time"

	"github.com/trellis-mesh/trellis/internal/model"
	"github.com/trellis-mesh/trellis/internal/proxy"
)

// drainDuration bounds how long a stopping proxy waits for its in-flight
// requests; short, since a local mesh stops at a developer's Ctrl-C.
const drainDuration = 2 * time.Second

// runProxy runs one in-process trellis-proxy until ctx is done. In-process
// keeps `go run ./cmd/trellis up` a single build; each proxy still talks to
// the control plane over real gRPC and serves on real sockets.
func runProxy(ctx context.Context, s proxySpec, xdsAddress string, log *slog.Logger) error {
	return proxy.Run(ctx, proxy.Options{
		XDSAddress:    xdsAddress,
		NodeID:        s.NodeID,
		Metadata:      s.Identity.metadata(),
		Labels:        s.Identity.Labels,
		AdminAddress:  s.AdminAddress,
		StatusAddress: s.StatusAddress,
		HealthAddress: s.HealthAddress,
		DrainDuration: drainDuration,
		Logger:        log,
	})
}

// workloadIdentity is what Istio's node metadata says about a proxy's
// workload, which its telemetry reports and tells its peers.
type workloadIdentity struct {
	Name, Namespace, ServiceAccount string
	Labels                          map[string]string
}

// identityOf is a WorkloadEntry's identity: a WorkloadEntry stands for one
// instance of one workload, so its name names both.
func identityOf(we *model.WorkloadEntry) workloadIdentity {
	return workloadIdentity{
		Name:           we.Name,
		Namespace:      we.Namespace,
		ServiceAccount: we.Spec.GetServiceAccount(),
		Labels:         maps.Clone(we.Spec.GetLabels()),
	}
}

// metadata is the node metadata of the proxy, with Istio's keys; local
// proxies take no traffic by interception (INTERCEPTION_MODE NONE).
func (w workloadIdentity) metadata() map[string]string {
	md := map[string]string{
		"INTERCEPTION_MODE": "NONE",
		"NAME":              w.Name,
		"NAMESPACE":         w.Namespace,
		"WORKLOAD_NAME":     w.Name,
	}
	if w.ServiceAccount != "" {
		md["SERVICE_ACCOUNT"] = w.ServiceAccount
	}
	return md
}
