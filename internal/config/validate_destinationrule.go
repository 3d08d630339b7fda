package config

import (
	"fmt"
	"math/big"
	"strings"

	networking "istio.io/api/networking/v1alpha3"
)

func validateDestinationRule(c *checker, dr *networking.DestinationRule) {
	switch h := dr.GetHost(); {
	case h == "":
		c.errorf("spec.host", "required")
	case !isWildcardHost(h) && !isIP(h):
		c.errorf("spec.host", "%q is not a valid host name", h)
	}
	validateTrafficPolicy(c, "spec.trafficPolicy", dr.GetTrafficPolicy())
	seen := map[string]int{}
	for i, s := range dr.GetSubsets() {
		path := fmt.Sprintf("spec.subsets[%d]", i)
		switch name := s.GetName(); {
		case name == "":
			c.errorf(path+".name", "required")
		case !isDNS1123Label(name):
			c.errorf(path+".name", "%q is not a valid subset name: use lower-case letters, digits and '-'", name)
		default:
			if first, dup := seen[name]; dup {
				c.errorf(path+".name", "duplicate subset %q (also spec.subsets[%d])", name, first)
			} else {
				seen[name] = i
			}
		}
		if len(s.GetLabels()) == 0 {
			c.errorf(path+".labels", "at least one label is required to select the subset's endpoints")
		}
		validateSelector(c, path+".labels", s.GetLabels())
		validateTrafficPolicy(c, path+".trafficPolicy", s.GetTrafficPolicy())
	}
}

func validateTrafficPolicy(c *checker, path string, tp *networking.TrafficPolicy) {
	if tp == nil {
		return
	}
	validateLoadBalancer(c, path+".loadBalancer", tp.GetLoadBalancer())
	validateConnectionPool(c, path+".connectionPool", tp.GetConnectionPool())
	validateOutlierDetection(c, path+".outlierDetection", tp.GetOutlierDetection())
	validateClientTLS(c, path+".tls", tp.GetTls())
	seen := map[uint32]int{}
	for i, p := range tp.GetPortLevelSettings() {
		ppath := fmt.Sprintf("%s.portLevelSettings[%d]", path, i)
		n := p.GetPort().GetNumber()
		switch first, dup := seen[n]; {
		case !validPort(n):
			c.errorf(ppath+".port.number", "must be between 1 and 65535, got %d", n)
		case dup:
			c.errorf(ppath+".port.number", "duplicate port %d (also %s.portLevelSettings[%d])", n, path, first)
		default:
			seen[n] = i
		}
		validateLoadBalancer(c, ppath+".loadBalancer", p.GetLoadBalancer())
		validateConnectionPool(c, ppath+".connectionPool", p.GetConnectionPool())
		validateOutlierDetection(c, ppath+".outlierDetection", p.GetOutlierDetection())
		validateClientTLS(c, ppath+".tls", p.GetTls())
	}
}

func validateLoadBalancer(c *checker, path string, lb *networking.LoadBalancerSettings) {
	validateLocalityLB(c, path+".localityLbSetting", lb.GetLocalityLbSetting())
	ch := lb.GetConsistentHash()
	if ch == nil {
		return
	}
	path += ".consistentHash"
	if ch.GetHashKey() == nil {
		c.errorf(path, "set one of httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName")
	}
	if hc := ch.GetHttpCookie(); hc != nil {
		if hc.GetName() == "" {
			c.errorf(path+".httpCookie.name", "required")
		}
		validateDuration(c, path+".httpCookie.ttl", hc.GetTtl(), true)
	}
	switch k := ch.GetHashKey().(type) {
	case *networking.LoadBalancerSettings_ConsistentHashLB_HttpHeaderName:
		if k.HttpHeaderName == "" {
			c.errorf(path+".httpHeaderName", "must not be empty")
		}
	case *networking.LoadBalancerSettings_ConsistentHashLB_HttpQueryParameterName:
		if k.HttpQueryParameterName == "" {
			c.errorf(path+".httpQueryParameterName", "must not be empty")
		}
	case *networking.LoadBalancerSettings_ConsistentHashLB_UseSourceIp:
		if !k.UseSourceIp {
			c.errorf(path+".useSourceIp", "must be true when set")
		}
	}
	// Envoy's bounds: a ring of at most 8M entries, a prime Maglev table.
	if n := ch.GetRingHash().GetMinimumRingSize(); n > maxRingSize {
		c.errorf(path+".ringHash.minimumRingSize", "must be at most %d, got %d", maxRingSize, n)
	}
	//lint:ignore SA1019 users' existing DestinationRules still set the deprecated field; Istio honours it.
	if n := ch.GetMinimumRingSize(); n > maxRingSize {
		c.errorf(path+".minimumRingSize", "must be at most %d, got %d", maxRingSize, n)
	}
	if n := ch.GetMaglev().GetTableSize(); n != 0 && (n >= maxMaglevTable || !big.NewInt(int64(n)).ProbablyPrime(0)) {
		c.errorf(path+".maglev.tableSize", "must be a prime number below %d, got %d", maxMaglevTable, n)
	}
}

const (
	maxRingSize    = 8 << 20
	maxMaglevTable = 5000011
)

// validateLocalityLB follows Istio's validateLocalityLbSetting.
func validateLocalityLB(c *checker, path string, s *networking.LocalityLoadBalancerSetting) {
	if s == nil {
		return
	}
	if len(s.GetDistribute()) > 0 && len(s.GetFailover()) > 0 {
		c.errorf(path, "set distribute or failover, not both")
	}
	for i, d := range s.GetDistribute() {
		dpath := fmt.Sprintf("%s.distribute[%d]", path, i)
		if d.GetFrom() == "" {
			c.errorf(dpath+".from", "required")
		}
		if len(d.GetTo()) == 0 {
			c.errorf(dpath+".to", "at least one locality is required")
		}
		var sum uint64
		for _, w := range d.GetTo() {
			sum += uint64(w)
		}
		if len(d.GetTo()) > 0 && sum != 100 {
			c.errorf(dpath+".to", "weights must sum to 100, got %d", sum)
		}
	}
	for i, f := range s.GetFailover() {
		fpath := fmt.Sprintf("%s.failover[%d]", path, i)
		switch {
		case f.GetFrom() == "" || f.GetTo() == "":
			c.errorf(fpath, "from and to are required")
		case f.GetFrom() == f.GetTo():
			c.errorf(fpath, "from and to must be different regions, got %q twice", f.GetFrom())
		case strings.Contains(f.GetFrom(), "/") || strings.Contains(f.GetTo(), "/"):
			c.errorf(fpath, "failover is between regions; %q -> %q names a zone", f.GetFrom(), f.GetTo())
		}
	}
}

func validateConnectionPool(c *checker, path string, cp *networking.ConnectionPoolSettings) {
	if cp == nil {
		return
	}
	if t := cp.GetTcp(); t != nil {
		nonNegative(c, path+".tcp.maxConnections", t.GetMaxConnections())
		validateDuration(c, path+".tcp.connectTimeout", t.GetConnectTimeout(), false)
	}
	if h := cp.GetHttp(); h != nil {
		nonNegative(c, path+".http.http1MaxPendingRequests", h.GetHttp1MaxPendingRequests())
		nonNegative(c, path+".http.http2MaxRequests", h.GetHttp2MaxRequests())
		nonNegative(c, path+".http.maxRequestsPerConnection", h.GetMaxRequestsPerConnection())
		nonNegative(c, path+".http.maxRetries", h.GetMaxRetries())
		nonNegative(c, path+".http.maxConcurrentStreams", h.GetMaxConcurrentStreams())
		validateDuration(c, path+".http.idleTimeout", h.GetIdleTimeout(), false)
	}
}

func validateOutlierDetection(c *checker, path string, od *networking.OutlierDetection) {
	if od == nil {
		return
	}
	//lint:ignore SA1019 users' existing DestinationRules still set the deprecated field; Istio validates it too.
	nonNegative(c, path+".consecutiveErrors", od.GetConsecutiveErrors())
	validateDuration(c, path+".interval", od.GetInterval(), false)
	validateDuration(c, path+".baseEjectionTime", od.GetBaseEjectionTime(), false)
	if p := od.GetMaxEjectionPercent(); p < 0 || p > 100 {
		c.errorf(path+".maxEjectionPercent", "must be between 0 and 100, got %d", p)
	}
	if p := od.GetMinHealthPercent(); p < 0 || p > 100 {
		c.errorf(path+".minHealthPercent", "must be between 0 and 100, got %d", p)
	}
}

func nonNegative(c *checker, path string, v int32) {
	if v < 0 {
		c.errorf(path, "must not be negative, got %d", v)
	}
}
