// Package ui is the console's HTTP side: a JSON API (the contract in
// docs/console.md) over the control plane's accepted config, its latest
// rejected one, the proxies' xDS sync state and the traffic the proxies
// report on their Prometheus endpoints, plus the embedded front-end.
//
// Every input sits behind a small interface (ConfigSource, ProxySource,
// TrafficSource, WeightWriter) so that the same Server serves a real
// control plane, tests, and the synthetic 500-service topology used to
// measure the front-end.
package ui
