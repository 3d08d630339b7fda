// Package streaminfo is what the proxy knows about one request or TCP connection as it goes: the
// Envoy response flags, the upstream it reached, bytes and timings. The connection manager and the
// TCP proxy fill it in; access logs and stats read it. It depends on nothing else in the proxy.
package streaminfo
