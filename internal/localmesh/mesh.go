package localmesh

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sort"
	"sync"

	"github.com/trellis-mesh/trellis/internal/controlplane"
	"github.com/trellis-mesh/trellis/internal/model"
)

// Options configure Run.
type Options struct {
	ConfigDir  string
	XDSAddress string // "" means the control plane's default, 127.0.0.1:15010
	// DebugAddress is the control plane's metrics and debug address
	// (controlplane.DefaultDebugAddress in `trellis up`); "" disables it.
	DebugAddress string
	UIAddress    string // the console's address; "" means no console
	// CADir keeps the mesh CA's root (controlplane.DefaultCADir() in
	// `trellis up`); "" gives a CA that lives only as long as the mesh.
	// Every proxy gets its workload certificate from that CA, so mesh
	// traffic is mutual TLS as in Istio (PERMISSIVE, auto mTLS).
	CADir  string
	Logger *slog.Logger

	// Ready, if set, is called once the control plane serves and every
	// proxy of the initial config reports ready on its admin /ready.
	Ready func(Mesh)
	// OnConfigError, if set, sees every rejected config (it is logged too).
	OnConfigError func(error)
}

// Mesh describes a running local mesh.
type Mesh struct {
	XDSAddress   string
	DebugAddress string  // "" when disabled
	Proxies      []Proxy // sorted by IP
	UIAddress    string  // "" without a console
}

// Proxy is one running proxy and where to reach it.
type Proxy struct {
	NodeID       string
	Name         string // workload name.namespace
	IP           string
	AdminAddress string
	// StatusAddress serves the proxy's /stats/prometheus (Istio's standard metrics), Istio's 15020.
	StatusAddress string
	// Entrypoints are the gateway's HTTP URLs (empty for sidecars).
	Entrypoints []string
}

// Run starts the control plane and the proxies, and runs until ctx is done;
// then it drains the proxies and stops the control plane. It returns an
// error if the mesh cannot start.
func Run(ctx context.Context, opts Options) error {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	caDir := opts.CADir
	if caDir == "" {
		tmp, err := os.MkdirTemp("", "trellis-ca-")
		if err != nil {
			return fmt.Errorf("local mesh: CA directory: %w", err)
		}
		defer os.RemoveAll(tmp)
		caDir = tmp
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	m := &manager{log: opts.Logger, running: map[string]*running{}}
	defer m.stopAll()

	var (
		xdsAddr    = make(chan string, 1)
		debugAddr  string // written before xdsAddr is sent
		uiAddr     string // written before xdsAddr is sent
		configured = make(chan struct{})
		firstOnce  sync.Once
	)
	cpErr := make(chan error, 1)
	go func() {
		cpErr <- controlplane.Run(ctx, controlplane.Options{
			ConfigDir:    opts.ConfigDir,
			XDSAddress:   opts.XDSAddress,
			DebugAddress: opts.DebugAddress,
			Logger:       opts.Logger.With("component", "controlplane"),
			UIAddress:    opts.UIAddress,
			CAAddress:    "127.0.0.1:0",
			CADir:        caDir,
			// Ready runs before any config is applied, so every OnConfig
			// below already knows where proxies must connect.
			Ready: func(r controlplane.Ready) {
				m.setControlPlane(r)
				if r.DebugAddr != nil {
					debugAddr = r.DebugAddr.String()
				}
				if r.UIAddr != nil {
					uiAddr = r.UIAddr.String()
				}
				xdsAddr <- r.XDSAddr.String()
			},
			OnConfig: func(snap *model.Snapshot) {
				m.reconcile(ctx, snap)
				firstOnce.Do(func() { close(configured) })
			},
			OnConfigError: opts.OnConfigError,
		})
	}()

	var addr string
	select {
	case addr = <-xdsAddr:
	case err := <-cpErr:
		return fmt.Errorf("local mesh: %w", err)
	}

	// The first config starts the proxies; a config dir that starts out
	// invalid leaves the control plane waiting for a good one.
	select {
	case <-configured:
	case err := <-cpErr:
		return fmt.Errorf("local mesh: %w", err)
	case <-ctx.Done():
		return nil
	}
	if err := m.waitReady(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("local mesh: %w", err)
	}
	if opts.Ready != nil {
		mesh := m.describe(addr)
		mesh.DebugAddress = debugAddr
		mesh.UIAddress = uiAddr
		opts.Ready(mesh)
	}

	select {
	case <-ctx.Done():
		m.stopAll()
		return <-cpErr
	case err := <-cpErr:
		return fmt.Errorf("local mesh: control plane stopped: %w", err)
	}
}

// proxySpec is what a proxy is started with, derived from one WorkloadEntry.
type proxySpec struct {
	NodeID       string
	Name         string
	IP           string
	AdminAddress string
	Gateway      bool
	Entrypoints  []string
	// Identity is the workload the proxy speaks for (Istio's node metadata).
	Identity workloadIdentity
	// StatusAddress and HealthAddress are the proxy's Istio status (15020) and health (15021)
	// ports on its own IP.
	StatusAddress, HealthAddress string
}

// specsFor derives one proxy per WorkloadEntry on loopback. A workload
// selected by some Gateway runs as a router (gateway), others as sidecars.
func specsFor(snap *model.Snapshot) []proxySpec {
	var out []proxySpec
	for _, we := range snap.Config.WorkloadEntries {
		addr, err := netip.ParseAddr(we.Spec.GetAddress())
		if err != nil || !addr.IsLoopback() {
			continue
		}
		s := proxySpec{
			Name:          we.Name + "." + we.Namespace,
			IP:            addr.String(),
			AdminAddress:  net.JoinHostPort(addr.String(), "15000"),
			StatusAddress: net.JoinHostPort(addr.String(), "15020"),
			HealthAddress: net.JoinHostPort(addr.String(), "15021"),
			Identity:      identityOf(we, snap.Config.Mesh.GetTrustDomain()),
		}
		for _, gw := range snap.Config.Gateways {
			sel := gw.Spec.GetSelector()
			if len(sel) == 0 || !model.LabelsMatch(sel, we.Spec.GetLabels()) {
				continue
			}
			s.Gateway = true
			for _, srv := range gw.Spec.GetServers() {
				if model.Protocol(srv.GetPort().GetProtocol()).IsHTTP() {
					s.Entrypoints = append(s.Entrypoints, fmt.Sprintf("http://%s/", net.JoinHostPort(s.IP, fmt.Sprint(srv.GetPort().GetNumber()))))
				}
			}
		}
		kind := model.SidecarProxy
		if s.Gateway {
			kind = model.Router
		}
		s.NodeID = fmt.Sprintf("%s~%s~%s~%s.%s", kind, s.IP, s.Name, we.Namespace, model.DomainSuffix)
		sort.Strings(s.Entrypoints)
		s.Entrypoints = dedup(s.Entrypoints)
		out = append(out, s)
	}
	return out
}

func dedup(s []string) []string {
	out := s[:0]
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}

var errNotReady = errors.New("proxies did not become ready")
