// Package rbac is Envoy's role-based access control for trellis-proxy: the HTTP filter
// envoy.filters.http.rbac and the network filter envoy.filters.network.rbac (before tcp_proxy), the
// two filters Istio's AuthorizationPolicy translation emits.
//
// A config's policies are compiled once into an Engine, a tree of matchers that evaluates a
// Request (the request's or connection's attributes, gathered on the stack) without allocating.
// Semantics are Envoy's: a policy matches when any of its permissions and any of its principals
// match; an ALLOW engine denies what no policy matches, a DENY engine denies what one matches, a
// LOG engine never denies and only sets the access_log_hint. Shadow rules are evaluated, counted and
// written to dynamic metadata, never enforced.
//
// Config this package cannot honour is rejected (NACKed) with its field path rather than ignored:
// an authorization filter that silently skipped a rule would grant access its author did not mean.
// The package depends on the filter seam (internal/proxy/filters), route matchers and streaminfo,
// never on the connection manager, the TCP proxy or the control plane.
package rbac
