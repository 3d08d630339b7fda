// Package xds serves Envoy xDS v3 over one ADS endpoint (state of the world
// and delta) and keeps every connected proxy's resources in step with the
// latest mesh snapshot.
//
// Per proxy it runs kuma's reconcile pipeline: translate → Validate() every
// resource → content-hash a version per type → Consistent() → set in
// go-control-plane's snapshot cache. A proxy whose translation or validation
// fails keeps serving its previous snapshot. Proxies of one class share one
// snapshot, and answers point at that snapshot's encoded resources (wire.go)
// rather than carrying a marshalled copy per proxy.
//
// It must not depend on where configuration comes from (files, Kubernetes)
// nor on the CLI; translation is injected as a function so this package can
// be tested without internal/translate, and so translation stays free of I/O.
package xds
