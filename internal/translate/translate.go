package translate

import (
	"errors"
	"fmt"
	"sort"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/trellis-mesh/trellis/internal/model"
)

// Resources is everything one proxy is served, each list sorted by resource
// name so that equal inputs give byte-equal output (and equal xDS versions).
type Resources struct {
	Listeners []*listenerv3.Listener
	Routes    []*routev3.RouteConfiguration
	Clusters  []*clusterv3.Cluster
	Endpoints []*endpointv3.ClusterLoadAssignment
}

// Build translates snap into the resources proxy needs. Sidecars get the
// virtualOutbound listener and their inbound listeners; routers (gateways)
// get one listener per HTTP Gateway server port. Both get a cluster for
// every service port and DestinationRule subset.
func Build(snap *model.Snapshot, proxy *model.Proxy) (*Resources, error) {
	if snap == nil {
		return nil, errors.New("translate: nil snapshot")
	}
	if proxy == nil {
		return nil, errors.New("translate: nil proxy")
	}
	e := newEnv(snap, proxy)
	res := &Resources{}

	clusters, cla, err := e.outboundClusters()
	if err != nil {
		return nil, fmt.Errorf("proxy %s: %w", proxy.ID, err)
	}
	res.Clusters, res.Endpoints = clusters, cla

	switch proxy.Type {
	case model.SidecarProxy:
		err = e.buildSidecar(res)
	case model.Router:
		err = e.buildGateway(res)
	default:
		err = fmt.Errorf("node type %q: want %q or %q", proxy.Type, model.SidecarProxy, model.Router)
	}
	if err != nil {
		return nil, fmt.Errorf("proxy %s: %w", proxy.ID, err)
	}
	// localbind.go
	e.bindLocalSources(res)

	if err := e.applySecurityFilters(res); err != nil { // authz.go
		return nil, fmt.Errorf("proxy %s: authorization: %w", proxy.ID, err)
	}
	if err := e.applyTelemetry(res); err != nil { // telemetry.go
		return nil, fmt.Errorf("proxy %s: telemetry: %w", proxy.ID, err)
	}
	res.sort()
	return res, nil
}

func (e *env) buildSidecar(res *Resources) error {
	if e.interceptNone() {
		l, rc, err := e.outboundListener()
		if err != nil {
			return err
		}
		res.Listeners = append(res.Listeners, l)
		res.Routes = append(res.Routes, rc)
	} else if err := e.captureOutbound(res); err != nil { // capture.go
		return err
	}

	ls, cs, err := e.inbound()
	if err != nil {
		return err
	}
	res.Listeners = append(res.Listeners, ls...)
	res.Clusters = append(res.Clusters, cs...)
	return nil
}

func (e *env) buildGateway(res *Resources) error {
	ls, rcs, err := e.gatewayListeners()
	if err != nil {
		return err
	}
	res.Listeners = append(res.Listeners, ls...)
	res.Routes = append(res.Routes, rcs...)
	return nil
}

func (r *Resources) sort() {
	sort.SliceStable(r.Listeners, func(i, j int) bool { return r.Listeners[i].GetName() < r.Listeners[j].GetName() })
	sort.SliceStable(r.Routes, func(i, j int) bool { return r.Routes[i].GetName() < r.Routes[j].GetName() })
	sort.SliceStable(r.Clusters, func(i, j int) bool { return r.Clusters[i].GetName() < r.Clusters[j].GetName() })
	sort.SliceStable(r.Endpoints, func(i, j int) bool { return r.Endpoints[i].GetClusterName() < r.Endpoints[j].GetClusterName() })
}

// env is what every translation step reads: the snapshot, the proxy, and
// what was derived about the proxy's own workload.
type env struct {
	snap     *model.Snapshot
	proxy    *model.Proxy
	workload *model.WorkloadEntry // nil when no WorkloadEntry has the proxy's IP
	labels   map[string]string    // the proxy's workload labels
}

func newEnv(snap *model.Snapshot, proxy *model.Proxy) *env {
	return newEnvOf(snap, proxy, func(labels map[string]string) *model.Snapshot { return visibleSnapshot(snap, proxy, labels) })
}

// newEnvOf is newEnv with the proxy's view made by view, from its labels.
func newEnvOf(snap *model.Snapshot, proxy *model.Proxy, view func(labels map[string]string) *model.Snapshot) *env {
	e := &env{snap: snap, proxy: proxy, workload: snap.WorkloadAt(proxy.IP)}
	if e.workload != nil {
		e.labels = e.workload.Spec.GetLabels()
	}
	if len(proxy.Labels) > 0 {
		e.labels = proxy.Labels
	}
	// scope.go: from here on the snapshot is what this proxy may see.
	e.snap = view(e.labels)
	return e
}

// interceptNone reports local mode: no iptables, so every listener binds the
// proxy's own address instead of the wildcard.
func (e *env) interceptNone() bool { return e.proxy.Interception == model.InterceptNone }

// bindIP is the address listeners bind when nothing more specific is set.
func (e *env) bindIP() string {
	if e.interceptNone() {
		return e.proxy.IP
	}
	return "0.0.0.0"
}
