package xdsconfig

import (
	"errors"
	"fmt"
	"time"

	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/trellis-mesh/trellis/internal/proxy/accesslog"
	"github.com/trellis-mesh/trellis/internal/proxy/filters"
)

const tcpProxyType = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"

// Envoy's tcp_proxy defaults.
const (
	defaultTCPIdleTimeout     = time.Hour
	defaultMaxConnectAttempts = 1
)

// TCPProxy is the converted envoy.filters.network.tcp_proxy.
type TCPProxy struct {
	StatPrefix string
	// Cluster is the one upstream cluster; empty when WeightedClusters chooses per connection.
	Cluster          string
	WeightedClusters []WeightedCluster
	// TotalWeight is the sum of WeightedClusters' weights.
	TotalWeight uint64
	// IdleTimeout closes a connection with no bytes either way for this long; 0 never does.
	IdleTimeout time.Duration
	// MaxConnectAttempts is how many upstream connections are tried before giving up (at least 1).
	MaxConnectAttempts uint32
	// MaxConnectionDuration closes connections this old; 0 lets them live.
	MaxConnectionDuration time.Duration
	// AccessLogs are the access_log entries, each given a connection's record when it closes.
	AccessLogs []accesslog.Logger
	// Inbound is the listener's traffic_direction INBOUND.
	Inbound bool
	// Observers are the network filters before tcp_proxy that watch its connections (istio.stats).
	Observers []filters.ConnObserverConfig
}

// WeightedCluster is one of a TCP proxy's weighted_clusters.
type WeightedCluster struct {
	Name   string
	Weight uint32
}

// PickCluster chooses the connection's cluster; r is a random number.
func (t *TCPProxy) PickCluster(r uint64) string {
	if t.Cluster != "" || t.TotalWeight == 0 {
		return t.Cluster
	}
	n := r % t.TotalWeight
	for _, wc := range t.WeightedClusters {
		if n < uint64(wc.Weight) {
			return wc.Name
		}
		n -= uint64(wc.Weight)
	}
	return t.WeightedClusters[len(t.WeightedClusters)-1].Name
}

func parseTCPProxy(a *anypb.Any) (*TCPProxy, error) {
	var p tcpproxyv3.TcpProxy
	if err := anypb.UnmarshalTo(a, &p, protoUnmarshal); err != nil {
		return nil, fmt.Errorf("typed_config: %w", err)
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if err := onlyFields(&p, "stat_prefix", "cluster", "weighted_clusters", "idle_timeout", "access_log",
		"max_connect_attempts", "max_downstream_connection_duration"); err != nil {
		return nil, err
	}
	out := &TCPProxy{
		StatPrefix:            p.GetStatPrefix(),
		Cluster:               p.GetCluster(),
		IdleTimeout:           duration(p.GetIdleTimeout(), defaultTCPIdleTimeout),
		MaxConnectAttempts:    defaultMaxConnectAttempts,
		MaxConnectionDuration: duration(p.GetMaxDownstreamConnectionDuration(), 0),
	}
	var err error
	if out.AccessLogs, err = parseAccessLogs(p.GetAccessLog()); err != nil {
		return nil, err
	}
	if m := p.GetMaxConnectAttempts(); m != nil {
		out.MaxConnectAttempts = m.GetValue()
	}
	if wc := p.GetWeightedClusters(); wc != nil {
		if err := onlyFields(wc, "clusters"); err != nil {
			return nil, fmt.Errorf("weighted_clusters.%w", err)
		}
		for i, c := range wc.GetClusters() {
			if err := onlyFields(c, "name", "weight"); err != nil {
				return nil, fmt.Errorf("weighted_clusters.clusters[%d].%w", i, err)
			}
			out.WeightedClusters = append(out.WeightedClusters, WeightedCluster{Name: c.GetName(), Weight: c.GetWeight()})
			out.TotalWeight += uint64(c.GetWeight())
		}
		if out.TotalWeight == 0 {
			return nil, errors.New("weighted_clusters: the weights add up to zero")
		}
	}
	return out, nil
}
