// Package route is trellis-proxy's routing table: virtual hosts chosen by the request's authority,
// routes chosen by path, headers and query parameters, and the action a route takes (which cluster,
// timeout, rewrites, header mutations, retry policy, mirrors; or a redirect or a direct response),
// plus each level's typed_per_filter_config, already parsed by the filters' packages and held as
// opaque values. It follows Envoy's RouteConfiguration semantics.
//
// Tables are built once per config push (by internal/proxy/xdsconfig) and are immutable afterwards;
// matching allocates nothing for the common cases (exact and wildcard domains, prefix/path routes,
// header matchers on single-valued headers).
//
// It must not depend on Envoy protos, net/http or any other part of the proxy: requests are described
// by Request and HeaderGetter, so the same table serves net/http today and our own codec later.
package route
