// Package admin is trellis-proxy's admin API, served on its own listener (port 15000 by default) with
// Envoy's paths and formats so Envoy tooling keeps working: /ready, /config_dump (built from the
// envoy.admin.v3 protos, so the JSON shape is Envoy's), /stats (text, or ?format=json), /clusters,
// /listeners and POST /quitquitquit.
//
// It reads the proxy through the small Source interface and must not depend on the proxy runtime
// package, on Envoy config protos beyond envoy.admin.v3, or on the control plane.
package admin
