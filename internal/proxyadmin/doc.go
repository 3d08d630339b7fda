// Package proxyadmin reads a running proxy's admin API (Envoy's, served by
// trellis-proxy on 15000) and turns what it says into the answers
// `trellis proxy-config` prints: which certificates the proxy holds
// (istioctl's `proxy-config secret`) and which authorization is in force on
// its listeners.
//
// It works on Envoy's JSON shapes (/config_dump, /certs) only, so it reads a
// real Envoy as well as trellis-proxy, and it must not import the proxy's
// internals: what the admin API shows is the contract.
package proxyadmin
