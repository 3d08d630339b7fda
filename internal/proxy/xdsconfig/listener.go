package xdsconfig

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	originaldstv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/original_dst/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/trellis-mesh/trellis/internal/proxy/filters"
	"github.com/trellis-mesh/trellis/internal/proxy/filters/istiostats"
	"github.com/trellis-mesh/trellis/internal/proxy/filters/rbac"
)

// Listener is a converted Envoy Listener: a socket, the listener filters that inspect each new
// connection, and the filter chains one of which serves it.
type Listener struct {
	Name    string
	Address string // host:port
	// BindToPort false means the listener owns no socket (Envoy's virtual listeners): it serves
	// connections a UseOriginalDst listener hands it.
	BindToPort bool
	// UseOriginalDst hands each connection to the BindToPort-false listener on its original
	// destination (after an iptables REDIRECT), exactly or on 0.0.0.0 and its port, else serves it
	// here; chains match the original destination either way.
	UseOriginalDst bool
	// Inbound is traffic_direction INBOUND (what /drain_listeners?inboundonly drains).
	Inbound         bool
	ListenerFilters ListenerFilters
	// FilterChains are chosen among per connection by their Match (Envoy's order); DefaultChain
	// serves connections none matches, and without it they are closed.
	FilterChains []*FilterChain
	DefaultChain *FilterChain
}

// HTTPManagers lists the listener's HTTP connection managers, the default chain's last.
func (l *Listener) HTTPManagers() []*HTTPConnectionManager {
	var out []*HTTPConnectionManager
	for _, fc := range l.FilterChains {
		if fc.HTTP != nil {
			out = append(out, fc.HTTP)
		}
	}
	if l.DefaultChain != nil && l.DefaultChain.HTTP != nil {
		out = append(out, l.DefaultChain.HTTP)
	}
	return out
}

// ListenerFilters are the listener filters, which inspect a connection's first bytes.
type ListenerFilters struct {
	// OriginalDst (envoy.filters.listener.original_dst) makes the connection's local address its
	// original destination before an iptables REDIRECT, without handing it to another listener:
	// chains match it and ORIGINAL_DST clusters dial it (Istio's virtualInbound).
	OriginalDst bool
	// TLSInspector reads SNI and ALPN from a TLS ClientHello (transport protocol "tls").
	TLSInspector bool
	// HTTPInspector tells HTTP/1.x from HTTP/2 prior knowledge (application protocols "http/1.0",
	// "http/1.1", "h2c") on plaintext connections.
	HTTPInspector bool
	// Timeout bounds the inspection (listener_filters_timeout, Envoy's default 15s; 0 is none).
	Timeout time.Duration
	// ContinueOnTimeout picks a chain with what was learnt when the timeout hits, instead of
	// closing the connection.
	ContinueOnTimeout bool
}

// FilterChain is one filter chain: how a connection is matched to it, its TLS termination, and its
// one terminal network filter (HTTP or TCP proxy).
type FilterChain struct {
	Name  string
	Match FilterChainMatch
	// TLS terminates TLS with this server config; nil serves plaintext.
	TLS *tls.Config
	// TLSHandshakeTimeout is transport_socket_connect_timeout; 0 is none.
	TLSHandshakeTimeout time.Duration
	// Exactly one of HTTP and TCP is set.
	HTTP *HTTPConnectionManager
	TCP  *TCPProxy
}

// setInbound tells the chain's terminal filter the listener's direction.
func (fc *FilterChain) setInbound(inbound bool) {
	if fc.HTTP != nil {
		fc.HTTP.Inbound = inbound
	}
	if fc.TCP != nil {
		fc.TCP.Inbound = inbound
	}
}

// SourceType is FilterChainMatch.source_type.
type SourceType int

// Source types: a local source is a loopback address or the connection's own local address.
const (
	SourceAny SourceType = iota
	SourceLocal
	SourceExternal
)

// FilterChainMatch is the converted FilterChainMatch; empty fields match anything.
type FilterChainMatch struct {
	DestinationPort          uint32
	PrefixRanges             []netip.Prefix
	ServerNames              []string // lower case; "*.example.com" is a wildcard
	TransportProtocol        string
	ApplicationProtocols     []string
	DirectSourcePrefixRanges []netip.Prefix
	SourceType               SourceType
	SourcePrefixRanges       []netip.Prefix
	SourcePorts              []uint32
}

const (
	tlsInspectorName  = "envoy.filters.listener.tls_inspector"
	tlsInspectorType  = "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"
	httpInspectorName = "envoy.filters.listener.http_inspector"
	httpInspectorType = "type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector"
	originalDstName   = "envoy.filters.listener.original_dst"
	originalDstType   = "type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst"

	defaultListenerFiltersTimeout = 15 * time.Second
)

// ParseListener converts and validates an Envoy Listener: its filter chains (each holding one HTTP
// connection manager or TCP proxy, plaintext or TLS), their matches, and the tls_inspector,
// http_inspector and original_dst listener filters. Access logs, socket options and connection balancing are
// accepted and ignored.
//
// TLS contexts may take their certificate and trust bundle from SDS (Istio's "default" and "ROOTCA"
// from the sds-grpc source), served by the SecretSource given WithSecrets.
func ParseListener(l *listenerv3.Listener, opts ...Option) (*Listener, error) {
	out, err := parseListener(l, newOptions(opts))
	if err != nil {
		return nil, &ResourceError{Kind: "Listener", Name: l.GetName(), Err: err}
	}
	return out, nil
}

func parseListener(l *listenerv3.Listener, o *options) (*Listener, error) {
	if err := l.Validate(); err != nil {
		return nil, err
	}
	if err := onlyFields(l, "name", "address", "filter_chains", "default_filter_chain", "listener_filters",
		"listener_filters_timeout", "continue_on_listener_filters_timeout", "traffic_direction", "bind_to_port",
		"use_original_dst", "per_connection_buffer_limit_bytes", "metadata", "drain_type", "stat_prefix",
		"access_log", "tcp_backlog_size", "enable_reuse_port", "reuse_port", "connection_balance_config",
		"ignore_global_conn_limit", "max_connections_to_accept_per_socket_event", "socket_options",
		"tcp_fast_open_queue_length"); err != nil {
		return nil, err
	}
	out := &Listener{Name: l.GetName(), BindToPort: l.GetBindToPort() == nil || l.GetBindToPort().GetValue(),
		UseOriginalDst: l.GetUseOriginalDst().GetValue(),
		Inbound:        l.GetTrafficDirection() == corev3.TrafficDirection_INBOUND}
	addr, err := socketAddress(l.GetAddress())
	if err != nil {
		return nil, fmt.Errorf("address: %w", err)
	}
	out.Address = addr
	if out.ListenerFilters, err = listenerFilters(l); err != nil {
		return nil, err
	}
	_, portStr, _ := net.SplitHostPort(addr)
	port, _ := strconv.ParseUint(portStr, 10, 32)
	seen := make(map[string]int, len(l.GetFilterChains()))
	names := make(map[string]int, len(l.GetFilterChains()))
	for i, fc := range l.GetFilterChains() {
		field := fmt.Sprintf("filter_chains[%d]", i)
		c, err := parseFilterChain(fc, uint32(port), o)
		if err != nil {
			return nil, fmt.Errorf("%s.%w", field, err)
		}
		c.setInbound(out.Inbound)
		// Envoy refuses two chains with the same match: which would serve is undefined.
		key := fmt.Sprint(c.Match)
		if j, dup := seen[key]; dup {
			return nil, fmt.Errorf("%s.filter_chain_match: the same match as filter_chains[%d]", field, j)
		}
		seen[key] = i
		if c.Name != "" {
			if j, dup := names[c.Name]; dup {
				return nil, fmt.Errorf("%s.name %q: also the name of filter_chains[%d]", field, c.Name, j)
			}
			names[c.Name] = i
		}
		out.FilterChains = append(out.FilterChains, c)
	}
	if dc := l.GetDefaultFilterChain(); dc != nil {
		if dc.GetFilterChainMatch() != nil {
			return nil, errors.New("default_filter_chain.filter_chain_match: the default chain has no match")
		}
		c, err := parseFilterChain(dc, uint32(port), o)
		if err != nil {
			return nil, fmt.Errorf("default_filter_chain.%w", err)
		}
		c.setInbound(out.Inbound)
		out.DefaultChain = c
	}
	if len(out.FilterChains) == 0 && out.DefaultChain == nil {
		return nil, errors.New("filter_chains: a listener needs a filter chain or a default_filter_chain")
	}
	setTracingDirection(out, l.GetTrafficDirection() == corev3.TrafficDirection_OUTBOUND)
	return out, nil
}

func listenerFilters(l *listenerv3.Listener) (ListenerFilters, error) {
	out := ListenerFilters{
		Timeout:           duration(l.GetListenerFiltersTimeout(), defaultListenerFiltersTimeout),
		ContinueOnTimeout: l.GetContinueOnListenerFiltersTimeout(),
	}
	for i, lf := range l.GetListenerFilters() {
		field := fmt.Sprintf("listener_filters[%d] (%q)", i, lf.GetName())
		if err := onlyFields(lf, "name", "typed_config"); err != nil {
			return out, fmt.Errorf("%s.%w", field, err)
		}
		tc := lf.GetTypedConfig()
		switch {
		case tc.GetTypeUrl() == tlsInspectorType || tc == nil && lf.GetName() == tlsInspectorName:
			if tc != nil {
				var ti tlsinspectorv3.TlsInspector
				if err := anypb.UnmarshalTo(tc, &ti, protoUnmarshal); err != nil {
					return out, fmt.Errorf("%s.typed_config: %w", field, err)
				}
				// The read buffer size is how Envoy peeks; ours grows as the ClientHello needs.
				if err := onlyFields(&ti, "initial_read_buffer_size"); err != nil {
					return out, fmt.Errorf("%s.typed_config.%w", field, err)
				}
			}
			out.TLSInspector = true
		case tc.GetTypeUrl() == httpInspectorType || tc == nil && lf.GetName() == httpInspectorName:
			out.HTTPInspector = true
		case tc.GetTypeUrl() == originalDstType || tc == nil && lf.GetName() == originalDstName:
			if tc != nil {
				var od originaldstv3.OriginalDst
				if err := anypb.UnmarshalTo(tc, &od, protoUnmarshal); err != nil {
					return out, fmt.Errorf("%s.typed_config: %w", field, err)
				}
				// traffic_direction only matters on Windows.
				if err := onlyFields(&od, "traffic_direction"); err != nil {
					return out, fmt.Errorf("%s.typed_config.%w", field, err)
				}
			}
			out.OriginalDst = true
		default:
			kind := tc.GetTypeUrl()
			if kind == "" {
				kind = lf.GetName()
			}
			return out, fmt.Errorf("%s: listener filter %q: %w", field, kind, ErrUnsupported)
		}
	}
	return out, nil
}

func parseFilterChain(fc *listenerv3.FilterChain, port uint32, o *options) (*FilterChain, error) {
	if err := onlyFields(fc, "filter_chain_match", "filters", "name", "metadata", "transport_socket",
		"transport_socket_connect_timeout"); err != nil {
		return nil, err
	}
	out := &FilterChain{Name: fc.GetName(), TLSHandshakeTimeout: duration(fc.GetTransportSocketConnectTimeout(), 0)}
	m, err := filterChainMatch(fc.GetFilterChainMatch())
	if err != nil {
		return nil, fmt.Errorf("filter_chain_match.%w", err)
	}
	out.Match = m
	if out.TLS, err = downstreamTransportSocket(fc.GetTransportSocket(), o); err != nil {
		return nil, fmt.Errorf("transport_socket.%w", err)
	}
	list := fc.GetFilters()
	if len(list) == 0 {
		return nil, errors.New("filters: a filter chain needs an HTTP connection manager or a TCP proxy")
	}
	observers, err := connObservers(list[:len(list)-1])
	if err != nil {
		return nil, err
	}
	last := len(list) - 1
	f := list[last]
	if err := onlyFields(f, "name", "typed_config"); err != nil {
		return nil, fmt.Errorf("filters[%d].%w", last, err)
	}
	tc := f.GetTypedConfig()
	switch tc.GetTypeUrl() {
	case hcmType:
		var h hcmv3.HttpConnectionManager
		if err := anypb.UnmarshalTo(tc, &h, protoUnmarshal); err != nil {
			return nil, fmt.Errorf("filters[0].typed_config: %w", err)
		}
		if len(observers) > 0 {
			return nil, fmt.Errorf("filters[0] (%q): network filters before the HTTP connection manager are %w", list[0].GetName(), ErrUnsupported)
		}
		if out.HTTP, err = convertHCM(&h, port); err != nil {
			return nil, fmt.Errorf("filters[%d] (http_connection_manager).%w", last, err)
		}
	case tcpProxyType:
		if out.TCP, err = parseTCPProxy(tc); err != nil {
			return nil, fmt.Errorf("filters[%d] (tcp_proxy).%w", last, err)
		}
		out.TCP.Observers = observers
	default:
		return nil, fmt.Errorf("filters[%d] (%q): typed_config %q: only the HTTP connection manager and the TCP proxy are %w", last, f.GetName(), tc.GetTypeUrl(), ErrUnsupported)
	}
	return out, nil
}

// networkFilterRegistry lists the network filters that may come before a tcp_proxy: filters that
// only watch its connections.
var networkFilterRegistry = []*filters.NetworkFactory{istiostats.NetworkFactory, rbac.NetworkFactory}

// connObservers converts the network filters before the terminal one.
func connObservers(list []*listenerv3.Filter) ([]filters.ConnObserverConfig, error) {
	var out []filters.ConnObserverConfig
	for i, f := range list {
		field := fmt.Sprintf("filters[%d] (%q)", i, f.GetName())
		if err := onlyFields(f, "name", "typed_config"); err != nil {
			return nil, fmt.Errorf("%s.%w", field, err)
		}
		typ := filters.ConfigType(f.GetTypedConfig())
		var fac *filters.NetworkFactory
		for _, nf := range networkFilterRegistry {
			if nf.ConfigType == typ || (typ == "" && nf.Name == f.GetName()) {
				fac = nf
			}
		}
		if fac == nil {
			return nil, fmt.Errorf("%s: network filter %q before the terminal filter: %w", field, typ, ErrUnsupported)
		}
		var c filters.ConnObserverConfig
		var err error
		if fac.ParseWithConverters != nil {
			c, err = fac.ParseWithConverters(f.GetTypedConfig(), converters)
		} else {
			c, err = fac.Parse(f.GetTypedConfig())
		}
		if err != nil {
			return nil, fmt.Errorf("%s.typed_config: %w", field, err)
		}
		out = append(out, c)
	}
	return out, nil
}

func filterChainMatch(m *listenerv3.FilterChainMatch) (FilterChainMatch, error) {
	var out FilterChainMatch
	if m == nil {
		return out, nil
	}
	if err := onlyFields(m, "destination_port", "prefix_ranges", "direct_source_prefix_ranges", "source_type",
		"source_prefix_ranges", "source_ports", "server_names", "transport_protocol", "application_protocols"); err != nil {
		return out, err
	}
	out.DestinationPort = m.GetDestinationPort().GetValue()
	var err error
	if out.PrefixRanges, err = cidrRanges(m.GetPrefixRanges()); err != nil {
		return out, fmt.Errorf("prefix_ranges%w", err)
	}
	if out.DirectSourcePrefixRanges, err = cidrRanges(m.GetDirectSourcePrefixRanges()); err != nil {
		return out, fmt.Errorf("direct_source_prefix_ranges%w", err)
	}
	if out.SourcePrefixRanges, err = cidrRanges(m.GetSourcePrefixRanges()); err != nil {
		return out, fmt.Errorf("source_prefix_ranges%w", err)
	}
	switch m.GetSourceType() {
	case listenerv3.FilterChainMatch_ANY:
		out.SourceType = SourceAny
	case listenerv3.FilterChainMatch_SAME_IP_OR_LOOPBACK:
		out.SourceType = SourceLocal
	case listenerv3.FilterChainMatch_EXTERNAL:
		out.SourceType = SourceExternal
	}
	out.SourcePorts = m.GetSourcePorts()
	for i, n := range m.GetServerNames() {
		n = strings.ToLower(n)
		if strings.Contains(n[min(1, len(n)):], "*") || strings.HasPrefix(n, "*") && !strings.HasPrefix(n, "*.") {
			return out, fmt.Errorf("server_names[%d] %q: only a leading \"*.\" wildcard is allowed", i, n)
		}
		out.ServerNames = append(out.ServerNames, n)
	}
	out.TransportProtocol = m.GetTransportProtocol()
	out.ApplicationProtocols = m.GetApplicationProtocols()
	return out, nil
}

func cidrRanges(rs []*corev3.CidrRange) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for i, r := range rs {
		if err := onlyFields(r, "address_prefix", "prefix_len"); err != nil {
			return nil, fmt.Errorf("[%d].%w", i, err)
		}
		a, err := netip.ParseAddr(r.GetAddressPrefix())
		if err != nil {
			return nil, fmt.Errorf("[%d].address_prefix: %w", i, err)
		}
		p, err := a.Prefix(int(r.GetPrefixLen().GetValue()))
		if err != nil {
			return nil, fmt.Errorf("[%d].prefix_len: %w", i, err)
		}
		out = append(out, p)
	}
	return out, nil
}
