package localmesh

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/trellis-mesh/trellis/internal/controlplane"
	"github.com/trellis-mesh/trellis/internal/model"
)

// readyTimeout bounds how long the mesh waits for its proxies at start.
const readyTimeout = 30 * time.Second

// manager keeps one running proxy per loopback WorkloadEntry.
type manager struct {
	log *slog.Logger

	mu      sync.Mutex
	xds     string
	ca      *controlplane.ReadyCA // nil: proxies run without workload certificates
	running map[string]*running   // by node ID
	wg      sync.WaitGroup
}

type running struct {
	spec   proxySpec
	cancel context.CancelFunc
	done   chan struct{}
}

func (m *manager) setControlPlane(r controlplane.Ready) {
	m.mu.Lock()
	m.xds = r.XDSAddr.String()
	m.ca = r.CA
	m.mu.Unlock()
}

// reconcile starts proxies for new workloads and stops those whose
// workload is gone. Called from the control plane's config callback, so it
// only starts goroutines and never waits on a proxy.
func (m *manager) reconcile(ctx context.Context, snap *model.Snapshot) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.xds == "" {
		return // stopping: no new proxies
	}
	want := map[string]proxySpec{}
	for _, s := range specsFor(snap) {
		want[s.NodeID] = s
	}
	for id, r := range m.running {
		if _, ok := want[id]; !ok {
			m.log.Info("workload removed; stopping its proxy", "node", id)
			r.cancel()
			delete(m.running, id)
		}
	}
	for id, s := range want {
		if _, ok := m.running[id]; ok {
			continue
		}
		pctx, cancel := context.WithCancel(ctx)
		r := &running{spec: s, cancel: cancel, done: make(chan struct{})}
		m.running[id] = r
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			defer close(r.done)
			if err := runProxy(pctx, s, m.xds, m.ca, m.log.With("component", "proxy", "workload", s.Name)); err != nil && pctx.Err() == nil {
				m.log.Error("proxy stopped", "workload", s.Name, "error", err)
			}
		}()
	}
}

// waitReady polls every proxy's admin /ready, as a user's readiness probe
// would, until all answer 200.
func (m *manager) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	client := &http.Client{Timeout: time.Second}
	for {
		pending := ""
		for _, s := range m.specs() {
			if !isReady(ctx, client, s.AdminAddress) {
				pending = s.Name
				break
			}
		}
		if pending == "" {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %s not ready after %s", errNotReady, pending, readyTimeout)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func isReady(ctx context.Context, c *http.Client, admin string) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+admin+"/ready", nil)
	if err != nil {
		return false
	}
	resp, err := c.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

func (m *manager) specs() []proxySpec {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]proxySpec, 0, len(m.running))
	for _, r := range m.running {
		out = append(out, r.spec)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].IP < out[j].IP })
	return out
}

func (m *manager) describe(xds string) Mesh {
	mesh := Mesh{XDSAddress: xds}
	for _, s := range m.specs() {
		mesh.Proxies = append(mesh.Proxies, Proxy{
			NodeID: s.NodeID, Name: s.Name, IP: s.IP, AdminAddress: s.AdminAddress, Entrypoints: s.Entrypoints,
			StatusAddress: s.StatusAddress,
		})
	}
	return mesh
}

// stopAll cancels every proxy and waits for them to drain.
func (m *manager) stopAll() {
	m.mu.Lock()
	for id, r := range m.running {
		r.cancel()
		delete(m.running, id)
	}
	m.xds = "" // no new proxies from late config callbacks
	m.mu.Unlock()
	m.wg.Wait()
}
