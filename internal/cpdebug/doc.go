// Package cpdebug is the control plane's monitoring and debug surface, what
// istiod serves on port 15014: Prometheus metrics on /metrics, and JSON
// debug endpoints (/debug/syncz, /debug/configz, /debug/config_errors,
// /debug/mesh) plus /ready.
//
// It reads the xDS server's per-proxy status and the config outcomes the
// control plane reports to a State; it owns no goroutines and serves no
// socket itself (internal/controlplane does). cmd/trellis decodes
// /debug/syncz with the SyncStatus type defined here, so the two cannot
// drift apart. It must not import internal/controlplane.
package cpdebug
