// Package xdsconfig is trellis-proxy's one conversion layer from Envoy's xDS v3 protos to the
// proxy's own immutable configuration: listeners with their HTTP connection manager settings,
// route tables (internal/proxy/route), clusters and endpoints (internal/proxy/upstream).
//
// Every resource is validated here, once. A field that would change behaviour but that trellis-proxy
// does not implement is an error naming the resource and the field path, so the xDS client NACKs it
// and the last good config keeps serving, rather than the proxy silently doing something else than
// the control plane asked. Fields that do not change request handling (stats names, access logs,
// timeouts we do not enforce yet) are accepted and ignored; doc comments on the Parse functions say
// which.
//
// It must not depend on the control plane (internal/config, internal/translate, internal/xds,
// internal/model), go-control-plane's server or cache packages, or net/http.
package xdsconfig
