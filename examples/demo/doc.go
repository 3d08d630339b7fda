// Package demo is the bookinfo-like mesh that `trellis up` runs when given
// no configuration of its own: three small HTTP services (productpage,
// reviews in versions v1, v2 and v3, ratings), the workloads they run as in
// local mode, and the Istio YAML that wires them together.
//
// The apps know nothing about Trellis: they reach other services by name
// through their sidecar used as an explicit HTTP proxy, exactly as an app
// would with Istio's captureMode NONE. The package therefore depends only on
// the standard library; it must not import the control plane, the proxy or
// the config model, so that it stays an honest stand-in for a user's own
// services. (Its tests do load the YAML with internal/config, to keep the
// demo valid.)
package demo
