// Package tcpproxy is Envoy's envoy.filters.network.tcp_proxy: it connects each downstream
// connection to a host of an upstream cluster and copies bytes both ways, half-closes included,
// until either side is done, the idle timeout passes, or the listener drains. It fills a
// streaminfo.Info per connection for access logs and counts Envoy's tcp.<stat_prefix>.* stats.
// It depends on the listener (ConnInfo), upstream (clusters), stats and streaminfo packages only.
package tcpproxy
