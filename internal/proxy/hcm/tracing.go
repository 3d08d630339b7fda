package hcm

import (
	"github.com/trellis-mesh/trellis/internal/proxy/filters"
	"github.com/trellis-mesh/trellis/internal/proxy/tracing"
)

// Option configures a Handler beyond its connection manager config.
type Option func(*Handler)

// WithTracer makes the handler trace its requests: a span starts when a request arrives (after
// x-request-id is set), its context goes into the upstream request's headers (after the route's
// header mutations, so a route cannot remove it), and it is finished with the request's record.
// nil traces nothing.
func WithTracer(t *tracing.Tracer) Option {
	return func(h *Handler) { h.tracer = t }
}

// WithFilterEnv adds proxy-wide things (such as Istio telemetry) to the Env the handler's HTTP
// filters are built with.
func WithFilterEnv(opts ...filters.EnvOption) Option {
	return func(h *Handler) { h.envOpts = append(h.envOpts, opts...) }
}
