// Package admin is trellis-proxy's admin API, served on its own listener (port 15000 by default) with
// Envoy's paths and formats so Envoy tooling keeps working: /ready, /config_dump (built from the
// envoy.admin.v3 protos, so the JSON shape is Envoy's), /stats (text, ?format=json, ?filter,
// ?usedonly), /stats/prometheus (Envoy's tags as labels), /clusters, /listeners, /logging (levels per
// component), and POST /drain_listeners, /reopen_logs and /quitquitquit.
//
// It reads the proxy through the small Source interface and must not depend on the proxy runtime
// package, on Envoy config protos beyond envoy.admin.v3, or on the control plane.
package admin
