package xdsconfig

import (
	"errors"
	"fmt"
	"net"
	"net/textproto"
	"regexp"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/trellis-mesh/trellis/internal/proxy/filters"
	"github.com/trellis-mesh/trellis/internal/proxy/route"
)

// ErrUnsupported marks config that is valid Envoy config but that trellis-proxy does not implement.
var ErrUnsupported = filters.ErrUnsupported

var protoUnmarshal = proto.UnmarshalOptions{}

// ResourceError is the failure of one named xDS resource: "Cluster "x": field.path: reason".
type ResourceError struct {
	Kind string // Listener, RouteConfiguration, Cluster, ClusterLoadAssignment
	Name string
	Err  error
}

func (e *ResourceError) Error() string {
	return e.Kind + " " + strconv.Quote(e.Name) + ": " + e.Err.Error()
}

func (e *ResourceError) Unwrap() error { return e.Err }

// onlyFields fails on the first populated field of m whose name is not in allowed: anything we do not
// know how to honour is rejected rather than ignored. The filter packages share it.
func onlyFields(m proto.Message, allowed ...string) error { return filters.OnlyFields(m, allowed...) }

// socketAddress renders an Envoy address as host:port.
func socketAddress(a *corev3.Address) (string, error) {
	if a == nil {
		return "", errors.New("address is required")
	}
	sa := a.GetSocketAddress()
	if sa == nil {
		return "", fmt.Errorf("only socket_address is supported: %w", ErrUnsupported)
	}
	if err := onlyFields(sa, "address", "port_value", "protocol", "ipv4_compat"); err != nil {
		return "", fmt.Errorf("socket_address.%w", err)
	}
	if sa.GetProtocol() != corev3.SocketAddress_TCP {
		return "", fmt.Errorf("socket_address.protocol %s: %w", sa.GetProtocol(), ErrUnsupported)
	}
	if sa.GetAddress() == "" {
		return "", errors.New("socket_address.address is required")
	}
	return net.JoinHostPort(sa.GetAddress(), strconv.FormatUint(uint64(sa.GetPortValue()), 10)), nil
}

// duration converts an optional proto duration, returning def when unset.
func duration(d *durationpb.Duration, def time.Duration) time.Duration {
	if d == nil {
		return def
	}
	return d.AsDuration()
}

// headerKey turns an Envoy header name into the form route.HeaderGetter uses.
func headerKey(name string) (string, error) {
	if name == "" {
		return "", errors.New("header name is required")
	}
	lower := strings.ToLower(name)
	if lower == "host" {
		return ":authority", nil // Envoy keeps Host as :authority
	}
	if strings.HasPrefix(lower, ":") {
		return lower, nil
	}
	return textproto.CanonicalMIMEHeaderKey(lower), nil
}

// compileRegex compiles an Envoy safe_regex; Envoy's matchers match the whole string, so it is anchored.
func compileRegex(m *matcherv3.RegexMatcher) (*regexp.Regexp, error) {
	if m == nil {
		return nil, errors.New("regex is required")
	}
	re, err := regexp.Compile(`^(?:` + m.GetRegex() + `)$`)
	if err != nil {
		return nil, fmt.Errorf("regex %q: %w", m.GetRegex(), err)
	}
	return re, nil
}

// regexpCompile compiles an unanchored RE2 pattern.
func regexpCompile(pattern string) (*regexp.Regexp, error) {
	re, err := regexp.Compile(pattern)
	if err != nil {
		return nil, fmt.Errorf("regex %q: %w", pattern, err)
	}
	return re, nil
}

// stringMatcher converts Envoy's StringMatcher.
func stringMatcher(m *matcherv3.StringMatcher) (route.StringMatcher, error) {
	sm := route.StringMatcher{IgnoreCase: m.GetIgnoreCase()}
	switch p := m.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		sm.Kind, sm.Value = route.StringExact, p.Exact
	case *matcherv3.StringMatcher_Prefix:
		sm.Kind, sm.Value = route.StringPrefix, p.Prefix
	case *matcherv3.StringMatcher_Suffix:
		sm.Kind, sm.Value = route.StringSuffix, p.Suffix
	case *matcherv3.StringMatcher_Contains:
		sm.Kind, sm.Value = route.StringContains, p.Contains
	case *matcherv3.StringMatcher_SafeRegex:
		re, err := compileRegex(p.SafeRegex)
		if err != nil {
			return sm, fmt.Errorf("safe_regex: %w", err)
		}
		sm.Kind, sm.Regex = route.StringRegex, re
	case nil:
		return sm, errors.New("match_pattern is required")
	default:
		return sm, fmt.Errorf("match_pattern %T: %w", p, ErrUnsupported)
	}
	return sm, nil
}
