package server

import (
	"errors"
	"fmt"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"

	"github.com/trellis-mesh/trellis/internal/proxy/hcm"
	"github.com/trellis-mesh/trellis/internal/proxy/listener"
	"github.com/trellis-mesh/trellis/internal/proxy/tcpproxy"
	"github.com/trellis-mesh/trellis/internal/proxy/tracing"
	"github.com/trellis-mesh/trellis/internal/proxy/upstream"
	"github.com/trellis-mesh/trellis/internal/proxy/xdsconfig"
)

// ApplyBootstrap applies a bootstrap's static_resources (listeners, clusters with their inline
// load_assignment, listeners' inline route configs) and remembers it for /config_dump. Readiness then
// waits for LDS and CDS if the bootstrap names lds_config / cds_config. It may be called once.
func (p *Proxy) ApplyBootstrap(b *bootstrapv3.Bootstrap) error {
	if err := b.Validate(); err != nil {
		return fmt.Errorf("bootstrap: %w", err)
	}
	p.tracers.SetNode(tracing.Node{ID: b.GetNode().GetId(), Zone: b.GetNode().GetLocality().GetZone(), Cluster: b.GetNode().GetCluster()})
	sr := b.GetStaticResources()
	if len(sr.GetSecrets()) > 0 {
		return fmt.Errorf("bootstrap: static_resources.secrets: %w", xdsconfig.ErrUnsupported)
	}
	now := time.Now()
	listeners := map[string]*listenerEntry{}
	for i, l := range sr.GetListeners() {
		if _, dup := listeners[l.GetName()]; dup {
			return fmt.Errorf("bootstrap: static_resources.listeners[%d]: duplicate listener %q", i, l.GetName())
		}
		cfg, err := xdsconfig.ParseListener(l, p.parseOpts...)
		if err != nil {
			return fmt.Errorf("bootstrap: static_resources.listeners[%d]: %w", i, err)
		}
		listeners[l.GetName()] = &listenerEntry{raw: l, cfg: cfg, updated: now}
	}
	clusters := map[string]*clusterEntry{}
	for i, c := range sr.GetClusters() {
		if _, dup := clusters[c.GetName()]; dup {
			return fmt.Errorf("bootstrap: static_resources.clusters[%d]: duplicate cluster %q", i, c.GetName())
		}
		cfg, err := xdsconfig.ParseCluster(c, p.parseOpts...)
		if err != nil {
			return fmt.Errorf("bootstrap: static_resources.clusters[%d]: %w", i, err)
		}
		clusters[c.GetName()] = &clusterEntry{raw: c, cfg: cfg, updated: now}
	}

	p.mu.Lock()
	if !p.bootLoaded.IsZero() {
		p.mu.Unlock()
		return errors.New("bootstrap already applied")
	}
	for name, e := range listeners {
		e.gen = p.nextGen()
		e.chains, e.def = p.newChains(e.cfg)
		if _, clash := p.dynamic.listeners[name]; clash {
			p.mu.Unlock()
			return fmt.Errorf("bootstrap: listener %q already exists as a dynamic listener", name)
		}
	}
	old := p.static.listeners
	p.static.listeners = listeners
	if err := p.applyListenersLocked(); err != nil {
		p.static.listeners = old
		p.mu.Unlock()
		return fmt.Errorf("bootstrap: %w", err)
	}
	p.static.clusters = clusters
	for name, e := range clusters {
		if running := p.clusters[name]; running != nil {
			running.Close()
		}
		p.clusters[name] = upstream.New(e.cfg, p.stats)
	}
	p.bootstrap = b
	p.bootLoaded = now
	dr := b.GetDynamicResources()
	p.waitLDS = p.waitLDS || dr.GetLdsConfig() != nil
	p.waitCDS = p.waitCDS || dr.GetCdsConfig() != nil
	p.publishLocked()
	sub, rds, eds, rdsChanged, edsChanged := p.subscriptionsLocked()
	p.mu.Unlock()
	if sub != nil && rdsChanged {
		sub.Subscribe(RouteType, rds)
	}
	if sub != nil && edsChanged {
		sub.Subscribe(EndpointType, eds)
	}
	return nil
}

// newChains builds the running side of a listener's filter chains: an HTTP connection manager or
// a TCP proxy each, with its TLS termination.
func (p *Proxy) newChains(cfg *xdsconfig.Listener) ([]listener.Chain, *listener.Chain) {
	mk := func(fc *xdsconfig.FilterChain) listener.Chain {
		c := listener.Chain{Name: fc.Name, Match: fc.Match, TLS: fc.TLS, TLSHandshakeTimeout: fc.TLSHandshakeTimeout}
		switch {
		case fc.HTTP != nil:
			c.HTTP = &listener.HTTPChain{
				Handler: hcm.New(fc.HTTP, &p.snap, p.stats, p.httpLog.With("listener", cfg.Name, "filter_chain", fc.Name),
					hcm.WithTracer(p.tracers.Tracer(fc.HTTP.Tracing)), hcm.WithFilterEnv(p.envOpts...),
					hcm.WithLocalCertificate(p.localCert)),
				Codec:          fc.HTTP.Codec,
				IdleTimeout:    fc.HTTP.IdleTimeout,
				MaxHeaderBytes: fc.HTTP.MaxRequestHeadersBytes,
			}
		case fc.TCP != nil:
			c.Conn = tcpproxy.New(fc.TCP, p.cluster, p.stats, p.log.With("listener", cfg.Name, "filter_chain", fc.Name), p.envOpts...)
		}
		return c
	}
	chains := make([]listener.Chain, 0, len(cfg.FilterChains))
	for _, fc := range cfg.FilterChains {
		chains = append(chains, mk(fc))
	}
	var def *listener.Chain
	if cfg.DefaultChain != nil {
		c := mk(cfg.DefaultChain)
		def = &c
	}
	return chains, def
}

// cluster returns the running cluster called name, or nil.
func (p *Proxy) cluster(name string) *upstream.Cluster {
	if s := p.snap.Load(); s != nil {
		return s.Clusters[name]
	}
	return nil
}

// applyListenersLocked hands the static and dynamic listeners to the listener manager.
func (p *Proxy) applyListenersLocked() error {
	specs := make([]listener.Spec, 0, len(p.static.listeners)+len(p.dynamic.listeners))
	for _, set := range []map[string]*listenerEntry{p.static.listeners, p.dynamic.listeners} {
		for _, e := range set {
			specs = append(specs, listener.Spec{
				Name:    e.cfg.Name,
				Inbound: e.cfg.Inbound,
				Address: e.cfg.Address,
				Bind:    e.cfg.BindToPort,
				// Envoy's use_original_dst handoff; see listener.Spec.
				UseOriginalDst: e.cfg.UseOriginalDst,
				Version:        e.gen,
				Filters:        e.cfg.ListenerFilters,
				Chains:         e.chains,
				Default:        e.def,
			})
		}
	}
	return p.listeners.Apply(specs)
}

func (p *Proxy) updateListeners(msgs []proto.Message) error {
	now := time.Now()
	next := make(map[string]*listenerEntry, len(msgs))
	for _, m := range msgs {
		l, ok := m.(*listenerv3.Listener)
		if !ok {
			return fmt.Errorf("LDS: got %T, want a Listener", m)
		}
		if _, clash := p.static.listeners[l.GetName()]; clash {
			return &xdsconfig.ResourceError{Kind: "Listener", Name: l.GetName(), Err: errors.New("a static listener of that name exists and cannot be replaced over LDS")}
		}
		if old := p.dynamic.listeners[l.GetName()]; old != nil && proto.Equal(old.raw, l) {
			next[l.GetName()] = old
			continue
		}
		cfg, err := xdsconfig.ParseListener(l, p.parseOpts...)
		if err != nil {
			return err
		}
		next[l.GetName()] = &listenerEntry{raw: l, cfg: cfg, updated: now}
	}
	for _, e := range next {
		if e.gen == "" {
			e.gen = p.nextGen()
			e.chains, e.def = p.newChains(e.cfg)
		}
	}
	old := p.dynamic.listeners
	p.dynamic.listeners = next
	if err := p.applyListenersLocked(); err != nil {
		p.dynamic.listeners = old
		return fmt.Errorf("LDS: %w", err)
	}
	p.gotLDS = true
	return nil
}

func (p *Proxy) updateRoutes(msgs []proto.Message) error {
	now := time.Now()
	next := make(map[string]*routeEntry, len(msgs))
	for _, m := range msgs {
		rc, ok := m.(*routev3.RouteConfiguration)
		if !ok {
			return fmt.Errorf("RDS: got %T, want a RouteConfiguration", m)
		}
		if old := p.dynamic.routes[rc.GetName()]; old != nil && proto.Equal(old.raw, rc) {
			next[rc.GetName()] = old
			continue
		}
		t, err := xdsconfig.ParseRouteConfiguration(rc)
		if err != nil {
			return err
		}
		next[rc.GetName()] = &routeEntry{raw: rc, table: t, updated: now}
	}
	p.dynamic.routes = next
	p.publishLocked()
	return nil
}

func (p *Proxy) updateClusters(msgs []proto.Message) error {
	now := time.Now()
	next := make(map[string]*clusterEntry, len(msgs))
	for _, m := range msgs {
		c, ok := m.(*clusterv3.Cluster)
		if !ok {
			return fmt.Errorf("CDS: got %T, want a Cluster", m)
		}
		if _, clash := p.static.clusters[c.GetName()]; clash {
			return &xdsconfig.ResourceError{Kind: "Cluster", Name: c.GetName(), Err: errors.New("a static cluster of that name exists and cannot be replaced over CDS")}
		}
		if old := p.dynamic.clusters[c.GetName()]; old != nil && proto.Equal(old.raw, c) {
			next[c.GetName()] = old
			continue
		}
		cfg, err := xdsconfig.ParseCluster(c, p.parseOpts...)
		if err != nil {
			return err
		}
		next[c.GetName()] = &clusterEntry{raw: c, cfg: cfg, updated: now}
	}
	added, modified, removed := p.stats.Counter("cluster_manager.cluster_added"),
		p.stats.Counter("cluster_manager.cluster_modified"), p.stats.Counter("cluster_manager.cluster_removed")
	for name, e := range next {
		old := p.dynamic.clusters[name]
		if old == e {
			continue // unchanged: keeps its pools, LB state and endpoints
		}
		if running := p.clusters[name]; running != nil {
			running.Close()
			modified.Inc()
		} else {
			added.Inc()
		}
		c := upstream.New(e.cfg, p.stats)
		if e.cfg.Type == upstream.EDS {
			if ep := p.dynamic.endpoints[e.cfg.EDSServiceName]; ep != nil {
				c.SetEndpoints(ep.eps)
			}
		}
		p.clusters[name] = c
	}
	for name := range p.dynamic.clusters {
		if _, keep := next[name]; !keep {
			p.clusters[name].Close()
			delete(p.clusters, name)
			removed.Inc()
		}
	}
	p.dynamic.clusters = next
	p.gotCDS = true
	p.publishLocked()
	return nil
}

func (p *Proxy) updateEndpoints(msgs []proto.Message) error {
	now := time.Now()
	next := make(map[string]*endpointEntry, len(msgs))
	for _, m := range msgs {
		cla, ok := m.(*endpointv3.ClusterLoadAssignment)
		if !ok {
			return fmt.Errorf("EDS: got %T, want a ClusterLoadAssignment", m)
		}
		if old := p.dynamic.endpoints[cla.GetClusterName()]; old != nil && proto.Equal(old.raw, cla) {
			next[cla.GetClusterName()] = old
			continue
		}
		eps, err := xdsconfig.ParseLoadAssignment(cla)
		if err != nil {
			return err
		}
		next[cla.GetClusterName()] = &endpointEntry{raw: cla, eps: eps, updated: now}
	}
	for _, c := range p.clusters {
		cfg := c.Config()
		if cfg.Type != upstream.EDS {
			continue
		}
		n, o := next[cfg.EDSServiceName], p.dynamic.endpoints[cfg.EDSServiceName]
		switch {
		case n == o:
		case n == nil:
			c.SetEndpoints(nil)
		default:
			c.SetEndpoints(n.eps)
		}
	}
	p.dynamic.endpoints = next
	return nil
}
