// Package filters is the seam between trellis-proxy's HTTP connection manager (internal/proxy/hcm)
// and its HTTP filters: the Filter interface a filter implements, the Exchange it sees, and the
// Factory through which the conversion layer (internal/proxy/xdsconfig) parses a filter's
// typed_config and its typed_per_filter_config. Each filter lives in its own package below this one
// (filters/fault, filters/cors, filters/localratelimit); the one ordered list of known filters is
// xdsconfig's registry (httpfilters.go), as CoreDNS declares its plugin order in one place.
//
// Filters run after route selection and before the router, in the order the connection manager
// lists them, and may answer the request themselves. This package must not depend on hcm, xdsconfig
// or the control plane.
package filters
