package admin

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/trellis-mesh/trellis/internal/proxy/stats"
	"github.com/trellis-mesh/trellis/internal/proxy/upstream"
)

// Envoy keeps proto field names (snake_case) in its admin JSON.
var jsonOpts = protojson.MarshalOptions{Multiline: true, Indent: "  ", UseProtoNames: true}

func writeJSON(w http.ResponseWriter, m proto.Message) {
	b, err := jsonOpts.Marshal(m)
	if err != nil {
		http.Error(w, fmt.Sprintf("marshal: %v", err), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(append(b, '\n'))
}

func writeStatsJSON(w http.ResponseWriter, snap []stats.Stat) {
	type stat struct {
		Name  string `json:"name"`
		Value int64  `json:"value"`
	}
	out := struct {
		Stats []stat `json:"stats"`
	}{Stats: make([]stat, 0, len(snap))}
	for _, s := range snap {
		out.Stats = append(out.Stats, stat{Name: s.Name, Value: s.Value})
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}

func (s *Server) listeners(w http.ResponseWriter, r *http.Request) {
	infos := s.cfg.Source.Listeners()
	if r.URL.Query().Get("format") == "json" {
		out := &adminv3.Listeners{}
		for _, l := range infos {
			out.ListenerStatuses = append(out.ListenerStatuses, &adminv3.ListenerStatus{
				Name: l.Name, LocalAddress: socketAddress(l.Address),
			})
		}
		writeJSON(w, out)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=UTF-8")
	for _, l := range infos {
		fmt.Fprintf(w, "%s::%s\n", l.Name, l.Address)
	}
}

// clusters renders Envoy's /clusters: per cluster its outlier figures, circuit breakers and EDS
// service name, then per host its counters, health flags, weight, locality, priority and success
// rate, in Envoy's text format (cluster::host::name::value) or as adminv3.Clusters with
// ?format=json.
func (s *Server) clusters(w http.ResponseWriter, r *http.Request) {
	clusters := s.cfg.Source.Clusters()
	if r.URL.Query().Get("format") == "json" {
		out := &adminv3.Clusters{}
		for _, c := range clusters {
			out.ClusterStatuses = append(out.ClusterStatuses, clusterStatus(c))
		}
		writeJSON(w, out)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=UTF-8")
	var b strings.Builder
	for _, c := range clusters {
		name, cfg := c.Name(), c.Config()
		line := func(parts ...string) {
			b.WriteString(name)
			for _, p := range parts {
				b.WriteString("::")
				b.WriteString(p)
			}
			b.WriteByte('\n')
		}
		line("observability_name", observabilityName(cfg))
		if od, ok := c.Outlier(); ok {
			line("outlier", "success_rate_average", fmtFloat(od.SuccessRateAverage))
			line("outlier", "success_rate_ejection_threshold", fmtFloat(od.SuccessRateEjectionThreshold))
			line("outlier", "local_origin_success_rate_average", fmtFloat(od.LocalOriginSuccessRateAverage))
			line("outlier", "local_origin_success_rate_ejection_threshold", fmtFloat(od.LocalOriginSuccessRateEjectionThreshold))
		}
		cb := c.CircuitBreakers()
		for _, p := range []struct {
			name string
			t    upstream.Thresholds
		}{{"default_priority", cb.Default}, {"high_priority", cb.High}} {
			line(p.name, "max_connections", utoa(uint64(p.t.MaxConnections)))
			line(p.name, "max_pending_requests", utoa(uint64(p.t.MaxPendingRequests)))
			line(p.name, "max_requests", utoa(uint64(p.t.MaxRequests)))
			line(p.name, "max_retries", utoa(uint64(p.t.MaxRetries)))
		}
		line("added_via_api", "true")
		if cfg.Type == upstream.EDS {
			line("eds_service_name", cfg.EDSServiceName)
		}
		for _, h := range c.Hosts() {
			for _, st := range h.Stats() {
				line(h.Address, st.Name, utoa(st.Value))
			}
			loc := h.Locality()
			sr, lsr := c.SuccessRate(h)
			line(h.Address, "hostname", h.Hostname())
			line(h.Address, "health_flags", h.HealthFlags())
			line(h.Address, "weight", utoa(uint64(h.Weight())))
			line(h.Address, "region", loc.Region)
			line(h.Address, "zone", loc.Zone)
			line(h.Address, "sub_zone", loc.SubZone)
			line(h.Address, "canary", "false")
			line(h.Address, "priority", utoa(uint64(h.Priority())))
			line(h.Address, "success_rate", fmtFloat(sr))
			line(h.Address, "local_origin_success_rate", fmtFloat(lsr))
		}
	}
	_, _ = io.WriteString(w, b.String())
}

func clusterStatus(c *upstream.Cluster) *adminv3.ClusterStatus {
	cfg := c.Config()
	cs := &adminv3.ClusterStatus{Name: c.Name(), AddedViaApi: true, ObservabilityName: observabilityName(cfg)}
	if cfg.Type == upstream.EDS {
		cs.EdsServiceName = cfg.EDSServiceName
	}
	if od, ok := c.Outlier(); ok {
		if od.SuccessRateEjectionThreshold >= 0 {
			cs.SuccessRateEjectionThreshold = &typev3.Percent{Value: od.SuccessRateEjectionThreshold}
		}
		if od.LocalOriginSuccessRateEjectionThreshold >= 0 {
			cs.LocalOriginSuccessRateEjectionThreshold = &typev3.Percent{Value: od.LocalOriginSuccessRateEjectionThreshold}
		}
	}
	cb := c.CircuitBreakers()
	thresholds := func(p corev3.RoutingPriority, t upstream.Thresholds) *clusterv3.CircuitBreakers_Thresholds {
		return &clusterv3.CircuitBreakers_Thresholds{Priority: p,
			MaxConnections: wrapperspb.UInt32(t.MaxConnections), MaxPendingRequests: wrapperspb.UInt32(t.MaxPendingRequests),
			MaxRequests: wrapperspb.UInt32(t.MaxRequests), MaxRetries: wrapperspb.UInt32(t.MaxRetries)}
	}
	cs.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{
		thresholds(corev3.RoutingPriority_DEFAULT, cb.Default), thresholds(corev3.RoutingPriority_HIGH, cb.High)}}
	for _, h := range c.Hosts() {
		f := h.Flags()
		health := &adminv3.HostHealthStatus{
			FailedActiveHealthCheck: f&upstream.FailedActiveHC != 0,
			FailedOutlierCheck:      f&upstream.FailedOutlierCheck != 0,
			PendingDynamicRemoval:   f&upstream.PendingDynamicRemoval != 0,
			PendingActiveHc:         f&upstream.PendingActiveHC != 0,
			EdsHealthStatus:         corev3.HealthStatus_HEALTHY,
		}
		switch {
		case f&upstream.FailedEDSHealth != 0:
			health.EdsHealthStatus = corev3.HealthStatus_UNHEALTHY
		case f&upstream.DegradedEDSHealth != 0:
			health.EdsHealthStatus = corev3.HealthStatus_DEGRADED
		}
		hs := &adminv3.HostStatus{
			Address:      socketAddress(h.Address),
			HealthStatus: health,
			Weight:       h.Weight(),
			Priority:     h.Priority(),
			Hostname:     h.Hostname(),
		}
		if loc := h.Locality(); loc != (upstream.Locality{}) {
			hs.Locality = &corev3.Locality{Region: loc.Region, Zone: loc.Zone, SubZone: loc.SubZone}
		}
		for _, st := range h.Stats() {
			typ := adminv3.SimpleMetric_COUNTER
			if st.Gauge {
				typ = adminv3.SimpleMetric_GAUGE
			}
			hs.Stats = append(hs.Stats, &adminv3.SimpleMetric{Type: typ, Name: st.Name, Value: st.Value})
		}
		if sr, lsr := c.SuccessRate(h); sr >= 0 || lsr >= 0 {
			if sr >= 0 {
				hs.SuccessRate = &typev3.Percent{Value: sr}
			}
			if lsr >= 0 {
				hs.LocalOriginSuccessRate = &typev3.Percent{Value: lsr}
			}
		}
		cs.HostStatuses = append(cs.HostStatuses, hs)
	}
	return cs
}

func observabilityName(cfg upstream.Config) string {
	if cfg.StatName != "" {
		return cfg.StatName
	}
	return cfg.Name
}

// fmtFloat prints like Envoy's {:g}: -1 stays "-1".
func fmtFloat(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }

func utoa(n uint64) string { return strconv.FormatUint(n, 10) }

func socketAddress(hostport string) *corev3.Address {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return nil
	}
	n, _ := strconv.ParseUint(port, 10, 32)
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(n)},
	}}}
}
