// Package controlplane runs Trellis's control plane in one call: it watches a
// config directory, turns each valid config into a mesh snapshot, and serves
// it to proxies over ADS. `trellis controlplane` is a thin wrapper around Run,
// and `trellis up` runs it in-process.
//
// It wires packages together and holds no logic of its own; it must not be
// imported by config, model, translate or xds (they are its inputs), nor by
// the proxy.
package controlplane
