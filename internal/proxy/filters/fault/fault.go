// Package fault is Envoy's fault injection HTTP filter (envoy.filters.http.fault): it delays and/or
// aborts a share of requests, as Istio's VirtualService fault does.
//
// Implemented: fixed delays and HTTP or gRPC aborts with their percentages, response_body,
// upstream_cluster and headers conditions, max_active_faults, per-route HTTPFault overrides, the
// DI/FI response flags and the http.<stat_prefix>.fault.{delays_injected,aborts_injected,
// active_faults,faults_overflow} stats. Rejected: header-controlled delays and aborts, response rate
// limits, downstream_nodes and filter_metadata. The *_runtime keys are accepted: without a runtime
// their defaults (the configured values) apply.
package fault

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	faultcommonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/fault/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/trellis-mesh/trellis/internal/proxy/filters"
	"github.com/trellis-mesh/trellis/internal/proxy/route"
	"github.com/trellis-mesh/trellis/internal/proxy/stats"
	"github.com/trellis-mesh/trellis/internal/proxy/streaminfo"
)

const typeURL = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"

// Factory registers the filter.
var Factory = &filters.Factory{
	Name:          "envoy.filters.http.fault",
	ConfigType:    typeURL,
	PerRouteTypes: []string{typeURL},
	Parse: func(tc *anypb.Any, conv filters.Converters) (filters.Config, error) {
		if tc == nil {
			return &Config{}, nil
		}
		return parse(tc, conv)
	},
	ParsePerRoute: func(tc *anypb.Any, conv filters.Converters) (any, error) { return parse(tc, conv) },
}

// DefaultAbortBody is Envoy's abort body when response_body is unset.
const DefaultAbortBody = "fault filter abort"

// Config is one HTTPFault: the filter's own, or a route's override (which replaces it whole).
type Config struct {
	HasDelay      bool
	Delay         time.Duration
	DelayFraction filters.Fraction

	HasAbort      bool
	AbortStatus   int // HTTP status; 0 with a gRPC abort
	GRPCStatus    int
	IsGRPCAbort   bool
	AbortFraction filters.Fraction
	AbortBody     string

	// UpstreamCluster, when set, limits faults to requests routed to that cluster.
	UpstreamCluster string
	// Headers must all match for a fault to apply.
	Headers []route.HeaderMatcher
	// MaxActiveFaults caps the faults under way at once; 0 means no cap.
	MaxActiveFaults uint32
	HasMaxActive    bool
}

func parse(tc *anypb.Any, conv filters.Converters) (*Config, error) {
	var f faultv3.HTTPFault
	if err := filters.Unmarshal(tc, &f); err != nil {
		return nil, err
	}
	if err := filters.OnlyFields(&f, "delay", "abort", "upstream_cluster", "headers", "max_active_faults",
		"delay_percent_runtime", "abort_percent_runtime", "delay_duration_runtime", "abort_http_status_runtime",
		"max_active_faults_runtime", "abort_grpc_status_runtime", "disable_downstream_cluster_stats"); err != nil {
		return nil, err
	}
	c := &Config{UpstreamCluster: f.GetUpstreamCluster()}
	if d := f.GetDelay(); d != nil {
		if err := filters.OnlyFields(d, "fixed_delay", "percentage"); err != nil {
			return nil, fmt.Errorf("delay.%w", err)
		}
		fd, ok := d.GetFaultDelaySecifier().(*faultcommonv3.FaultDelay_FixedDelay)
		if !ok {
			return nil, errors.New("delay: fixed_delay is required")
		}
		c.HasDelay, c.Delay, c.DelayFraction = true, fd.FixedDelay.AsDuration(), filters.FractionOf(d.GetPercentage())
	}
	if a := f.GetAbort(); a != nil {
		if err := filters.OnlyFields(a, "http_status", "grpc_status", "percentage", "response_body"); err != nil {
			return nil, fmt.Errorf("abort.%w", err)
		}
		switch e := a.GetErrorType().(type) {
		case *faultv3.FaultAbort_HttpStatus:
			c.AbortStatus = int(e.HttpStatus)
		case *faultv3.FaultAbort_GrpcStatus:
			c.IsGRPCAbort, c.GRPCStatus = true, int(e.GrpcStatus)
		default:
			return nil, errors.New("abort: http_status or grpc_status is required")
		}
		c.HasAbort, c.AbortFraction, c.AbortBody = true, filters.FractionOf(a.GetPercentage()), a.GetResponseBody()
		if c.AbortBody == "" {
			c.AbortBody = DefaultAbortBody
		}
	}
	for i, h := range f.GetHeaders() {
		m, err := conv.HeaderMatcher(h)
		if err != nil {
			return nil, fmt.Errorf("headers[%d] (%q).%w", i, h.GetName(), err)
		}
		c.Headers = append(c.Headers, m)
	}
	if m := f.GetMaxActiveFaults(); m != nil {
		c.HasMaxActive, c.MaxActiveFaults = true, m.GetValue()
	}
	return c, nil
}

// Build makes the running filter with its stats.
func (c *Config) Build(env filters.Env) filters.Filter {
	p := "http." + env.StatPrefix + ".fault."
	return &Filter{
		cfg:      c,
		delays:   env.Stats.Counter(p + "delays_injected"),
		aborts:   env.Stats.Counter(p + "aborts_injected"),
		overflow: env.Stats.Counter(p + "faults_overflow"),
		active:   env.Stats.Gauge(p + "active_faults"),
	}
}

// Filter injects the faults of its config or of the route's override.
type Filter struct {
	cfg                      *Config
	delays, aborts, overflow *stats.Counter
	active                   *stats.Gauge
	activeN                  atomic.Int64
}

// OnRequest implements filters.Filter.
func (f *Filter) OnRequest(ctx context.Context, x *filters.Exchange, perRoute any) filters.Status {
	c := f.cfg
	if pr, ok := perRoute.(*Config); ok {
		c = pr
	}
	if (!c.HasDelay && !c.HasAbort) || (c.UpstreamCluster != "" && c.UpstreamCluster != x.Cluster) {
		return filters.Continue
	}
	for i := range c.Headers {
		if !c.Headers[i].Matches(x.Lookup) {
			return filters.Continue
		}
	}
	delay := c.HasDelay && c.DelayFraction.Sample()
	abort := c.HasAbort && c.AbortFraction.Sample()
	if !delay && !abort {
		return filters.Continue
	}
	// Envoy counts a fault as active from its decision until the request ends; here until the
	// filter returns, which is when the delay is over or the abort is sent.
	if c.HasMaxActive && f.activeN.Load() >= int64(c.MaxActiveFaults) {
		f.overflow.Inc()
		return filters.Continue
	}
	f.activeN.Add(1)
	f.active.Inc()
	defer func() { f.activeN.Add(-1); f.active.Dec() }()
	if delay {
		f.delays.Inc()
		x.Info.SetFlag(streaminfo.DelayInjected)
		t := time.NewTimer(c.Delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return filters.Stop
		}
	}
	if !abort {
		return filters.Continue
	}
	f.aborts.Inc()
	reply := filters.LocalReply{Status: c.AbortStatus, Body: c.AbortBody, Details: "fault_filter_abort"}
	if c.IsGRPCAbort {
		// A gRPC abort answers HTTP 200 with the grpc-status; a client that is not gRPC gets the
		// mapped HTTP status's cousin, 503, since there is no HTTP status to send.
		reply.Status, reply.GRPCStatus, reply.HasGRPCStatus = http.StatusServiceUnavailable, c.GRPCStatus, true
		if x.GRPC {
			reply.Status = http.StatusOK
		}
	}
	return x.SendLocalReply(reply, streaminfo.FaultInjected)
}
