package rbac

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	rbacnetv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/trellis-mesh/trellis/internal/proxy/filters"
	"github.com/trellis-mesh/trellis/internal/proxy/streaminfo"
)

// Name and type URL of the network filter.
const (
	NetworkName    = "envoy.filters.network.rbac"
	NetworkTypeURL = "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC"
)

// NetworkFactory registers the network filter, which goes before a tcp_proxy.
var NetworkFactory = &filters.NetworkFactory{
	Name:       NetworkName,
	ConfigType: NetworkTypeURL,
	ParseWithConverters: func(tc *anypb.Any, conv filters.Converters) (filters.ConnObserverConfig, error) {
		return ParseNetwork(tc, conv)
	},
}

// NetworkConfig is a parsed envoy.extensions.filters.network.rbac.v3.RBAC.
type NetworkConfig struct {
	rules      rules
	statPrefix string
	delayDeny  time.Duration
}

// ParseNetwork converts the network filter's typed_config.
func ParseNetwork(tc *anypb.Any, conv filters.Converters) (*NetworkConfig, error) {
	if tc == nil {
		return nil, errors.New("typed_config: required (stat_prefix)")
	}
	var m rbacnetv3.RBAC
	if err := filters.Unmarshal(tc, &m); err != nil {
		return nil, err
	}
	// matcher and shadow_matcher (the generic matcher tree) are not implemented; Istio emits
	// neither. enforcement_type is accepted either way: see doc.go's note on TCP.
	if err := filters.OnlyFields(&m, "rules", "shadow_rules", "stat_prefix", "shadow_rules_stat_prefix",
		"enforcement_type", "delay_deny"); err != nil {
		return nil, err
	}
	if conv.StringMatcher == nil || conv.HeaderMatcher == nil {
		return nil, errors.New("no matcher converters: the conversion layer must lend them")
	}
	out := &NetworkConfig{statPrefix: m.GetStatPrefix(), delayDeny: m.GetDelayDeny().AsDuration()}
	var err error
	if out.rules.engine, err = compile(m.GetRules(), conv); err != nil {
		return nil, fmt.Errorf("rules.%w", err)
	}
	if out.rules.shadow, err = compile(m.GetShadowRules(), conv); err != nil {
		return nil, fmt.Errorf("shadow_rules.%w", err)
	}
	out.rules.shadowPrefix = m.GetShadowRulesStatPrefix()
	return out, nil
}

// BuildConnObserver makes the running filter for one filter chain.
func (c *NetworkConfig) BuildConnObserver(env filters.Env) filters.ConnObserver {
	return &NetworkFilter{
		cfg:      c,
		counters: newCounters(env.Stats, c.statPrefix, "", c.rules.shadowPrefix),
		keys:     newShadowKeys(c.rules.shadowPrefix),
	}
}

// NetworkFilter is the running network filter. The TCP proxy asks it (filters.ConnAuthorizer)
// before it dials the upstream; a denied connection is closed without reaching one.
type NetworkFilter struct {
	cfg      *NetworkConfig
	counters counters
	keys     shadowKeys
}

var _ filters.ConnAuthorizer = (*NetworkFilter)(nil)

// AuthorizeConn evaluates the connection once, when it is accepted. A denial records Envoy's
// connection termination detail (in the record's ResponseCodeDetails, which TCP leaves unused)
// and, after delay_deny, returns false.
func (f *NetworkFilter) AuthorizeConn(ctx context.Context, c net.Conn, info *streaminfo.Info) bool {
	rs := &f.cfg.rules
	if rs.engine == nil && rs.shadow == nil {
		return true
	}
	req := getRequest()
	defer putRequest(req)
	connRequest(c, info, req)
	var shadow, enforced Decision
	if rs.shadow != nil {
		shadow = rs.shadow.Evaluate(req)
		f.counters.count(shadow, true)
		recordShadow(info, NetworkName, &f.keys, shadow)
		if rs.shadow.action == Log {
			recordLogHint(info, shadow)
		}
	}
	if rs.engine == nil {
		return true
	}
	enforced = rs.engine.Evaluate(req)
	f.counters.count(enforced, false)
	if rs.engine.action == Log {
		recordLogHint(info, enforced)
	}
	if enforced.Allowed {
		return true
	}
	info.ResponseCodeDetails = enforced.Details()
	if d := f.cfg.delayDeny; d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	}
	return false
}

// OnUpstreamConnected and OnConnClosed: the filter only decides.
func (f *NetworkFilter) OnUpstreamConnected(*streaminfo.Info) {}

// OnConnClosed does nothing.
func (f *NetworkFilter) OnConnClosed(*streaminfo.Info) {}

// connRequest is what a TCP connection offers the engines: addresses, SNI, the peer certificate
// and metadata; no headers. Its remote address is the peer's (no X-Forwarded-For on TCP).
func connRequest(c net.Conn, info *streaminfo.Info, req *Request) {
	req.Headers = nil
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		req.DirectRemote = a.AddrPort().Addr().Unmap()
	}
	req.Remote = req.DirectRemote
	if a, ok := c.LocalAddr().(*net.TCPAddr); ok {
		ap := a.AddrPort()
		req.Local = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	req.ServerName = info.ServerName
	if tc, ok := c.(*tls.Conn); ok {
		st := tc.ConnectionState()
		req.TLS = &st
		if req.ServerName == "" {
			req.ServerName = st.ServerName
		}
	}
	req.PeerURISAN = info.DownstreamPeerURISAN
	req.Metadata = info.DynamicMetadata
}
