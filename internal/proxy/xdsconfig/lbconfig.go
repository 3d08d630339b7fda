package xdsconfig

import (
	"errors"
	"fmt"
	"math/big"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"

	"github.com/trellis-mesh/trellis/internal/proxy/upstream"
)

// parseLB converts lb_policy, its per-policy config and common_lb_config.
func parseLB(cfg *upstream.Config, c *clusterv3.Cluster) error {
	lb := &cfg.LBConfig
	switch c.GetLbPolicy() {
	case clusterv3.Cluster_ROUND_ROBIN, clusterv3.Cluster_CLUSTER_PROVIDED:
		cfg.LB = upstream.RoundRobin
		if rr := c.GetRoundRobinLbConfig(); rr.GetSlowStartConfig() != nil {
			return fmt.Errorf("round_robin_lb_config.slow_start_config: %w", ErrUnsupported)
		}
	case clusterv3.Cluster_LEAST_REQUEST:
		cfg.LB = upstream.LeastRequest
		lr := c.GetLeastRequestLbConfig()
		if err := onlyFields(lr, "choice_count", "active_request_bias"); err != nil {
			return fmt.Errorf("least_request_lb_config.%w", err)
		}
		lb.ChoiceCount = lr.GetChoiceCount().GetValue()
		if b := lr.GetActiveRequestBias(); b != nil {
			if b.GetRuntimeKey() != "" {
				return fmt.Errorf("least_request_lb_config.active_request_bias.runtime_key: %w", ErrUnsupported)
			}
			if b.GetDefaultValue() < 0 {
				return errors.New("least_request_lb_config.active_request_bias: must not be negative")
			}
			lb.ActiveRequestBias, lb.HasActiveRequestBias = b.GetDefaultValue(), true
		}
	case clusterv3.Cluster_RANDOM:
		cfg.LB = upstream.Random
	case clusterv3.Cluster_RING_HASH:
		cfg.LB = upstream.RingHash
		rh := c.GetRingHashLbConfig()
		if err := onlyFields(rh, "minimum_ring_size", "maximum_ring_size", "hash_function"); err != nil {
			return fmt.Errorf("ring_hash_lb_config.%w", err)
		}
		if rh.GetHashFunction() != clusterv3.Cluster_RingHashLbConfig_XX_HASH {
			return fmt.Errorf("ring_hash_lb_config.hash_function %s: only XX_HASH is %w", rh.GetHashFunction(), ErrUnsupported)
		}
		lb.MinRingSize = rh.GetMinimumRingSize().GetValue()
		lb.MaxRingSize = rh.GetMaximumRingSize().GetValue()
		minSize, maxSize := lb.MinRingSize, lb.MaxRingSize
		if minSize == 0 {
			minSize = upstream.DefaultMinRingSize
		}
		if maxSize == 0 {
			maxSize = upstream.DefaultMaxRingSize
		}
		if minSize > maxSize {
			return fmt.Errorf("ring_hash_lb_config: minimum_ring_size (%d) > maximum_ring_size (%d)", minSize, maxSize)
		}
	case clusterv3.Cluster_MAGLEV:
		cfg.LB = upstream.Maglev
		if size := c.GetMaglevLbConfig().GetTableSize(); size != nil {
			if !big.NewInt(int64(size.GetValue())).ProbablyPrime(0) {
				return fmt.Errorf("maglev_lb_config.table_size: %d is not a prime number", size.GetValue())
			}
			lb.MaglevTableSize = size.GetValue()
		}
	default:
		return fmt.Errorf("lb_policy %s: %w", c.GetLbPolicy(), ErrUnsupported)
	}
	common := c.GetCommonLbConfig()
	if err := onlyFields(common, "healthy_panic_threshold", "zone_aware_lb_config", "locality_weighted_lb_config",
		"update_merge_window", "consistent_hashing_lb_config"); err != nil {
		return fmt.Errorf("common_lb_config.%w", err)
	}
	if p := common.GetHealthyPanicThreshold(); p != nil {
		lb.PanicThreshold, lb.HasPanicThreshold = p.GetValue(), true
	}
	// Zone-aware routing needs the bootstrap's cluster_manager.local_cluster_name, which trellis-proxy
	// does not accept; without it Envoy does not do zone-aware routing either, so the settings are
	// inert here as there.
	lb.LocalityWeighted = common.GetLocalityWeightedLbConfig() != nil
	if ch := common.GetConsistentHashingLbConfig(); ch != nil {
		if ch.GetUseHostnameForHashing() {
			return fmt.Errorf("common_lb_config.consistent_hashing_lb_config.use_hostname_for_hashing: %w", ErrUnsupported)
		}
		if ch.GetHashBalanceFactor() != nil {
			return fmt.Errorf("common_lb_config.consistent_hashing_lb_config.hash_balance_factor: %w", ErrUnsupported)
		}
	}
	return nil
}

// parseCircuitBreakers converts circuit_breakers. Each priority's unset limits take Envoy's
// defaults; retry budgets and per-host thresholds are rejected.
func parseCircuitBreakers(cfg *upstream.Config, cb *clusterv3.CircuitBreakers) error {
	if err := onlyFields(cb, "thresholds"); err != nil {
		return err
	}
	seen := map[string]bool{}
	for i, t := range cb.GetThresholds() {
		field := fmt.Sprintf("thresholds[%d]", i)
		if err := onlyFields(t, "priority", "max_connections", "max_pending_requests", "max_requests",
			"max_retries", "track_remaining"); err != nil {
			return fmt.Errorf("%s.%w", field, err)
		}
		p := t.GetPriority().String()
		if seen[p] {
			return fmt.Errorf("%s.priority: %s is set twice", field, p)
		}
		seen[p] = true
		th := upstream.DefaultThresholds
		th.TrackRemaining = t.GetTrackRemaining()
		if v := t.GetMaxConnections(); v != nil {
			th.MaxConnections = v.GetValue()
		}
		if v := t.GetMaxPendingRequests(); v != nil {
			th.MaxPendingRequests = v.GetValue()
		}
		if v := t.GetMaxRequests(); v != nil {
			th.MaxRequests = v.GetValue()
		}
		if v := t.GetMaxRetries(); v != nil {
			th.MaxRetries = v.GetValue()
		}
		if t.GetPriority() == 0 {
			cfg.CircuitBreakers.Default = th
		} else {
			cfg.CircuitBreakers.High = th
		}
	}
	return nil
}
