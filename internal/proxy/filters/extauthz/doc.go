// Package extauthz is Envoy's external authorization HTTP filter (envoy.filters.http.ext_authz):
// before a request goes upstream it asks an authorization service, over HTTP or over gRPC
// (envoy.service.auth.v3.Authorization/Check), and forwards, changes or denies the request as the
// service answers. It is what Istio's CUSTOM AuthorizationPolicy action and MeshConfig
// extensionProviders (envoyExtAuthzHttp, envoyExtAuthzGrpc) produce, and the way a custom auth
// service in the sidecar path hands the user's identity to applications in request headers.
//
// The call goes through the proxy's own cluster (filters.Env.Clusters), so EDS, load balancing,
// circuit breakers and the cluster's TLS apply; it is bounded by the configured timeout and ends
// when the client goes away. Errors fail closed (403, or status_on_error, response flag UAEX)
// unless failure_mode_allow.
//
// Config is parsed once (config.go); per request nothing is built unless the service is called,
// and a request the filter skips (disabled route, filter_enabled, filter_enabled_metadata) costs no
// allocation. docs/security-extauthz.md lists the supported fields and where trellis-proxy
// differs from Envoy.
package extauthz
