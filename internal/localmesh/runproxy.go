package localmesh

import (
	"context"
	"log/slog"
	"maps"
	"time"

	"github.com/trellis-mesh/trellis/internal/controlplane"
	"github.com/trellis-mesh/trellis/internal/model"
	"github.com/trellis-mesh/trellis/internal/proxy"
	"github.com/trellis-mesh/trellis/internal/proxy/identity"
)

// drainDuration bounds how long a stopping proxy waits for its in-flight
// requests; short, since a local mesh stops at a developer's Ctrl-C.
const drainDuration = 2 * time.Second

// tokenTTL is how long a proxy's bootstrap token is good for: one is minted
// for every certificate request, so it only needs to outlive the request.
const tokenTTL = 10 * time.Minute

// runProxy runs one in-process trellis-proxy until ctx is done. In-process
// keeps `go run ./cmd/trellis up` a single build; each proxy still talks to
// the control plane over real gRPC and serves on real sockets.
// With a CA, the proxy gets its workload certificate from it, authenticated
// by a bootstrap token minted here for the workload's service account: what
// a Kubernetes service-account token does in a cluster.
func runProxy(ctx context.Context, s proxySpec, xdsAddress string, ca *controlplane.ReadyCA, log *slog.Logger) error {
	var id *identity.Config
	if ca != nil {
		ns, sa := s.Identity.Namespace, s.Identity.ServiceAccount
		id = &identity.Config{
			CAAddress:      ca.Addr.String(),
			RootCert:       ca.RootPEM(),
			Token:          func() (string, error) { return ca.MintBootstrapToken(ns, sa, tokenTTL) },
			TrustDomain:    s.Identity.TrustDomain,
			Namespace:      ns,
			ServiceAccount: sa,
			Logger:         log,
		}
	}
	return proxy.Run(ctx, proxy.Options{
		Identity:      id,
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
	Name, Namespace, ServiceAccount, TrustDomain string
	Labels                                       map[string]string
}

// identityOf is a WorkloadEntry's identity: a WorkloadEntry stands for one
// instance of one workload, so its name names both. Without a service
// account it runs as "default", as a Pod does.
func identityOf(we *model.WorkloadEntry, trustDomain string) workloadIdentity {
	sa := we.Spec.GetServiceAccount()
	if sa == "" {
		sa = "default"
	}
	if trustDomain == "" {
		trustDomain = model.DefaultMesh().GetTrustDomain()
	}
	return workloadIdentity{
		Name:           we.Name,
		Namespace:      we.Namespace,
		ServiceAccount: sa,
		TrustDomain:    trustDomain,
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
	if w.TrustDomain != "" {
		md["TRUST_DOMAIN"] = w.TrustDomain
	}
	return md
}
