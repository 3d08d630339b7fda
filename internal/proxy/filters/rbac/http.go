package rbac

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"

	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/trellis-mesh/trellis/internal/proxy/filters"
)

// Names and type URLs of the HTTP filter.
const (
	Name            = "envoy.filters.http.rbac"
	TypeURL         = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
	PerRouteTypeURL = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute"
)

// Envoy's local reply to a denied request.
const (
	deniedBody = "RBAC: access denied"
)

// Factory registers the HTTP filter.
var Factory = &filters.Factory{
	Name:          Name,
	ConfigType:    TypeURL,
	PerRouteTypes: []string{PerRouteTypeURL},
	Parse: func(tc *anypb.Any, conv filters.Converters) (filters.Config, error) {
		return ParseHTTP(tc, conv)
	},
	ParsePerRoute: func(tc *anypb.Any, conv filters.Converters) (any, error) {
		return ParsePerRoute(tc, conv)
	},
}

// Config is a parsed envoy.extensions.filters.http.rbac.v3.RBAC.
type Config struct {
	rules rules
}

// PerRoute is a parsed RBACPerRoute: its rules replace the filter's on the route; without rules
// the filter does nothing there.
type PerRoute struct {
	rules rules
}

// ParseHTTP converts the filter's typed_config; nil (an entry without one) is a filter without
// rules, which lets everything through.
func ParseHTTP(tc *anypb.Any, conv filters.Converters) (*Config, error) {
	var m rbachttpv3.RBAC
	if tc != nil {
		if err := filters.Unmarshal(tc, &m); err != nil {
			return nil, err
		}
	}
	r, err := httpRules(&m, conv)
	if err != nil {
		return nil, err
	}
	return &Config{rules: r}, nil
}

// ParsePerRoute converts an RBACPerRoute.
func ParsePerRoute(tc *anypb.Any, conv filters.Converters) (*PerRoute, error) {
	var m rbachttpv3.RBACPerRoute
	if err := filters.Unmarshal(tc, &m); err != nil {
		return nil, err
	}
	if err := filters.OnlyFields(&m, "rbac"); err != nil {
		return nil, err
	}
	r, err := httpRules(m.GetRbac(), conv)
	if err != nil {
		return nil, fmt.Errorf("rbac.%w", err)
	}
	return &PerRoute{rules: r}, nil
}

func httpRules(m *rbachttpv3.RBAC, conv filters.Converters) (rules, error) {
	var out rules
	if m == nil {
		return out, nil
	}
	// matcher and shadow_matcher (the generic matcher tree) and per-rule stats are not
	// implemented: Istio emits neither.
	if err := filters.OnlyFields(m, "rules", "shadow_rules", "rules_stat_prefix", "shadow_rules_stat_prefix"); err != nil {
		return out, err
	}
	var err error
	if out.engine, err = compile(m.GetRules(), conv); err != nil {
		return out, fmt.Errorf("rules.%w", err)
	}
	if out.shadow, err = compile(m.GetShadowRules(), conv); err != nil {
		return out, fmt.Errorf("shadow_rules.%w", err)
	}
	out.rulesPrefix, out.shadowPrefix = m.GetRulesStatPrefix(), m.GetShadowRulesStatPrefix()
	return out, nil
}

// Build makes the running filter for one connection manager.
func (c *Config) Build(env filters.Env) filters.Filter {
	return &Filter{
		cfg:         c,
		counters:    newCounters(env.Stats, "http."+env.StatPrefix+".", c.rules.rulesPrefix, c.rules.shadowPrefix),
		keys:        newShadowKeys(c.rules.shadowPrefix),
		useRemote:   env.UseRemoteAddress,
		trustedHops: env.XFFNumTrustedHops,
	}
}

// Filter is the running HTTP filter.
type Filter struct {
	cfg         *Config
	counters    counters
	keys        shadowKeys
	useRemote   bool
	trustedHops uint32
}

// OnRequest evaluates the shadow rules (recorded, never enforced), then the rules: a denial is
// Envoy's 403 "RBAC: access denied" with the matched policy in the response code details. Envoy
// sets no response flag for it, and neither does this filter.
func (f *Filter) OnRequest(ctx context.Context, x *filters.Exchange, perRoute any) filters.Status {
	rs, keys := &f.cfg.rules, &f.keys
	var routeKeys shadowKeys
	if pr, ok := perRoute.(*PerRoute); ok {
		rs = &pr.rules
		if rs.shadowPrefix != "" { // Envoy: the route's prefix names the metadata keys when set
			routeKeys = newShadowKeys(rs.shadowPrefix)
			keys = &routeKeys
		}
	}
	if rs.engine == nil && rs.shadow == nil {
		return filters.Continue
	}
	req := getRequest()
	f.fill(ctx, x, rs.needs(), req)

	// Both engines see the request as it came in; their metadata is written after both ran.
	var shadow, enforced Decision
	if rs.shadow != nil {
		shadow = rs.shadow.Evaluate(req)
		f.counters.count(shadow, true)
	}
	if rs.engine != nil {
		enforced = rs.engine.Evaluate(req)
		f.counters.count(enforced, false)
	}
	putRequest(req)
	if info := x.Info; info != nil {
		if rs.shadow != nil {
			recordShadow(info, Name, keys, shadow)
			if rs.shadow.action == Log {
				recordLogHint(info, shadow)
			}
		}
		if rs.engine != nil && rs.engine.action == Log {
			recordLogHint(info, enforced)
		}
	}
	if rs.engine == nil || enforced.Allowed {
		return filters.Continue
	}
	return x.SendLocalReply(filters.LocalReply{Status: http.StatusForbidden, Body: deniedBody, Details: enforced.Details()}, 0)
}

// fill gathers what the engines read about the request.
func (f *Filter) fill(ctx context.Context, x *filters.Exchange, n needs, req *Request) {
	req.Headers = x.Lookup
	req.TLS = x.TLS
	if x.TLS != nil {
		req.ServerName = x.TLS.ServerName
	}
	info := x.Info
	if info != nil {
		req.Metadata = info.DynamicMetadata
		req.PeerURISAN = info.DownstreamPeerURISAN
		if req.ServerName == "" {
			req.ServerName = info.ServerName
		}
		if n&(needDirect|needRemote) != 0 {
			if ap, err := netip.ParseAddrPort(info.DownstreamRemoteAddr); err == nil {
				req.DirectRemote = ap.Addr().Unmap()
			}
		}
	}
	if n&needRemote != 0 {
		req.Remote = remoteAddress(req.DirectRemote, req.Headers, f.useRemote, f.trustedHops)
	}
	if n&needLocal != 0 {
		if a, ok := ctx.Value(http.LocalAddrContextKey).(*net.TCPAddr); ok {
			ap := a.AddrPort()
			req.Local = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		}
	}
}
