package xdsconfig

import (
	"errors"
	"fmt"
	"sort"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/trellis-mesh/trellis/internal/proxy/filters"
	"github.com/trellis-mesh/trellis/internal/proxy/filters/cors"
	"github.com/trellis-mesh/trellis/internal/proxy/filters/extauthz"
	"github.com/trellis-mesh/trellis/internal/proxy/filters/fault"
	"github.com/trellis-mesh/trellis/internal/proxy/filters/istiostats"
	"github.com/trellis-mesh/trellis/internal/proxy/filters/jwtauthn"
	"github.com/trellis-mesh/trellis/internal/proxy/filters/localratelimit"
	"github.com/trellis-mesh/trellis/internal/proxy/filters/rbac"
	"github.com/trellis-mesh/trellis/internal/proxy/route"
)

// httpFilterRegistry is the one list of HTTP filters trellis-proxy implements. A filter is added
// here and nowhere else; its package parses its own config.
var httpFilterRegistry = filters.NewRegistry(
	istiostats.Factory,
	fault.Factory,
	cors.Factory,
	localratelimit.Factory,
	extauthz.Factory,
	rbac.Factory,
	jwtauthn.Factory,
)

// converters lend the conversion layer's matchers to filters, so a matcher means the same everywhere.
var converters = filters.Converters{
	StringMatcher: func(m *matcherv3.StringMatcher) (route.StringMatcher, error) { return stringMatcher(m) },
	HeaderMatcher: headerMatcher,
}

// MatcherConverters are the matcher conversions the proxy lends its filters, for filter tests that
// parse config exactly as the proxy does.
func MatcherConverters() filters.Converters { return converters }

const filterConfigType = "type.googleapis.com/envoy.config.route.v3.FilterConfig"

// httpFilters converts the HCM's http_filters: registered filters in order, then the router, which
// must come last. Unknown filters are rejected unless is_optional, as Envoy does.
func httpFilters(list []*hcmv3.HttpFilter, out *HTTPConnectionManager) error {
	sawRouter := false
	for i, f := range list {
		field := fmt.Sprintf("http_filters[%d] (%q)", i, f.GetName())
		if err := onlyFields(f, "name", "typed_config", "is_optional", "disabled"); err != nil {
			return fmt.Errorf("%s.%w", field, err)
		}
		tc := f.GetTypedConfig()
		isRouter := tc.GetTypeUrl() == routerType || (tc == nil && f.GetName() == routerName)
		if isRouter {
			if i != len(list)-1 {
				return fmt.Errorf("%s: the router must be the last HTTP filter", field)
			}
			sawRouter = true
			if tc != nil {
				var r routerv3.Router
				if err := anypb.UnmarshalTo(tc, &r, protoUnmarshal); err != nil {
					return fmt.Errorf("%s.typed_config: %w", field, err)
				}
				out.SuppressEnvoyHeaders = r.GetSuppressEnvoyHeaders()
			}
			continue
		}
		var fac *filters.Factory
		if tc != nil {
			fac = httpFilterRegistry.ByConfigType(filters.ConfigType(tc))
		} else {
			fac = httpFilterRegistry.ByName(f.GetName())
		}
		if fac == nil {
			if f.GetIsOptional() {
				continue // Envoy skips optional filters it does not know
			}
			kind := filters.ConfigType(tc)
			if kind == "" {
				kind = f.GetName()
			}
			return fmt.Errorf("%s: HTTP filter %q: %w", field, kind, ErrUnsupported)
		}
		cfg, err := fac.Parse(tc, converters)
		if err != nil {
			return fmt.Errorf("%s.typed_config: %w", field, err)
		}
		out.HTTPFilters = append(out.HTTPFilters, filters.Spec{Name: f.GetName(), Config: cfg, Disabled: f.GetDisabled()})
	}
	if len(list) > 0 && !sawRouter {
		return errors.New("http_filters: the last HTTP filter must be the router (" + routerName + ")")
	}
	return nil
}

// perFilterConfigs converts a level's typed_per_filter_config. Entries are accepted for registered
// filters only; an unknown one is rejected unless wrapped in a FilterConfig with is_optional.
func perFilterConfigs(m map[string]*anypb.Any) (route.FilterConfigs, error) {
	if len(m) == 0 {
		return nil, nil
	}
	names := make([]string, 0, len(m))
	for name := range m {
		names = append(names, name)
	}
	sort.Strings(names) // stable error messages
	out := make(route.FilterConfigs, len(m))
	for _, name := range names {
		field := fmt.Sprintf("typed_per_filter_config[%q]", name)
		fc, ok, err := perFilterConfig(m[name])
		if err != nil {
			return nil, fmt.Errorf("%s: %w", field, err)
		}
		if ok {
			out[name] = fc
		}
	}
	return out, nil
}

func perFilterConfig(a *anypb.Any) (fc route.FilterConfig, ok bool, err error) {
	optional := false
	if a.GetTypeUrl() == filterConfigType {
		var w routev3.FilterConfig
		if err := anypb.UnmarshalTo(a, &w, protoUnmarshal); err != nil {
			return fc, false, err
		}
		if err := onlyFields(&w, "config", "is_optional", "disabled"); err != nil {
			return fc, false, err
		}
		fc.Toggles, fc.Disabled = true, w.GetDisabled()
		optional = w.GetIsOptional()
		a = w.GetConfig()
		if a == nil {
			return fc, true, nil
		}
	}
	fac := httpFilterRegistry.ByPerRouteType(a.GetTypeUrl())
	if fac == nil {
		if optional {
			return fc, false, nil // Envoy ignores optional entries of filters it does not know
		}
		return fc, false, fmt.Errorf("%q: per-route config of an unknown HTTP filter: %w", a.GetTypeUrl(), ErrUnsupported)
	}
	cfg, err := fac.ParsePerRoute(a, converters)
	if err != nil {
		return fc, false, err
	}
	fc.Config = cfg
	return fc, true, nil
}
