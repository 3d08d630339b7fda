// Package adstest holds raw Envoy xDS v3 ADS clients for tests: a
// state-of-the-world client and a delta client that speak real gRPC to any
// AggregatedDiscoveryService server.
//
// They are deliberately not the proxy's xDS client. Each method sends or
// receives exactly one message, so a test sees the exact wire exchange
// (which requests carry the node, what is ACKed or NACKed with which nonce,
// what the server sends unasked) and nothing is retried, cached or hidden.
//
// It is imported by tests only. It must not import internal/xds or
// internal/controlplane: it is the client those packages' tests drive, and
// depending on the server under test would let the two agree on a mistake.
package adstest
