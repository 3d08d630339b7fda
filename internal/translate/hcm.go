package translate

import (
	"fmt"
	"net"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Filter names as Envoy registers them (go-control-plane's wellknown
// constants, spelled out so this package imports no server-side code).
const (
	hcmFilterName    = "envoy.filters.network.http_connection_manager"
	routerFilterName = "envoy.filters.http.router"
	faultFilterName  = "envoy.filters.http.fault"
	corsFilterName   = "envoy.filters.http.cors"
)

// hcmOptions are the few connection-manager settings that differ between
// the outbound, inbound and gateway listeners.
type hcmOptions struct {
	statPrefix string
	// rds names a route configuration fetched over ADS; inline is used
	// instead when set (inbound listeners carry their one route inline).
	rds    string
	inline *routev3.RouteConfiguration
	// explicitProxy accepts absolute-form request targets
	// ("GET http://host:port/path"), which apps send when they use the
	// proxy as HTTP_PROXY in local mode.
	explicitProxy bool
	// useRemoteAddress trusts the peer address rather than
	// x-forwarded-for: right for an edge proxy (gateway), as in Istio.
	useRemoteAddress bool
	// direction is the listener's traffic_direction (telemetry's reporter).
	direction corev3.TrafficDirection
}

// httpConnectionManager builds an HCM whose filter chain is Istio's: fault,
// then CORS, then telemetry (telemetry.go), then the router. Fault and CORS are inert
// until a route's typed_per_filter_config (a VirtualService fault or
// corsPolicy) turns them on, so every HCM carries them.
func httpConnectionManager(o hcmOptions) (*hcmv3.HttpConnectionManager, error) {
	h := &hcmv3.HttpConnectionManager{
		CodecType:  hcmv3.HttpConnectionManager_AUTO,
		StatPrefix: o.statPrefix,
	}
	for _, f := range []struct {
		name string
		cfg  proto.Message
	}{
		{faultFilterName, &faultv3.HTTPFault{}},
		{corsFilterName, &corsv3.Cors{}},
		{routerFilterName, &routerv3.Router{}},
	} {
		cfg, err := anypb.New(f.cfg)
		if err != nil {
			return nil, fmt.Errorf("%s filter config: %w", f.name, err)
		}
		h.HttpFilters = append(h.HttpFilters, &hcmv3.HttpFilter{
			Name:       f.name,
			ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: cfg},
		})
	}
	if err := insertTelemetryFilters(h, o.direction); err != nil {
		return nil, err
	}
	if o.inline != nil {
		h.RouteSpecifier = &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: o.inline}
	} else {
		h.RouteSpecifier = &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			ConfigSource:    adsConfigSource(),
			RouteConfigName: o.rds,
		}}
	}
	if o.explicitProxy {
		h.HttpProtocolOptions = &corev3.Http1ProtocolOptions{AllowAbsoluteUrl: wrapperspb.Bool(true)}
	}
	if o.useRemoteAddress {
		h.UseRemoteAddress = wrapperspb.Bool(true)
	}
	if o.direction == corev3.TrafficDirection_INBOUND {
		// As Istio's sidecars: the app learns its mTLS caller from x-forwarded-client-cert,
		// which only a client with a certificate can add to.
		h.ForwardClientCertDetails = hcmv3.HttpConnectionManager_APPEND_FORWARD
		h.SetCurrentClientCertDetails = &hcmv3.HttpConnectionManager_SetCurrentClientCertDetails{
			Subject: wrapperspb.Bool(true), Dns: true, Uri: true,
		}
	}
	return h, nil
}

// hcmFilterChain wraps a connection manager in a filter chain.
func hcmFilterChain(h *hcmv3.HttpConnectionManager) (*listenerv3.FilterChain, error) {
	cfg, err := anypb.New(h)
	if err != nil {
		return nil, fmt.Errorf("http connection manager %s: %w", h.GetStatPrefix(), err)
	}
	return &listenerv3.FilterChain{Filters: []*listenerv3.Filter{{
		Name:       hcmFilterName,
		ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: cfg},
	}}}, nil
}

// httpListener is a listener on ip:port with a single HTTP filter chain.
func httpListener(name, ip string, port uint32, dir corev3.TrafficDirection, o hcmOptions) (*listenerv3.Listener, error) {
	o.direction = dir
	h, err := httpConnectionManager(o)
	if err != nil {
		return nil, fmt.Errorf("listener %s: %w", name, err)
	}
	fc, err := hcmFilterChain(h)
	if err != nil {
		return nil, fmt.Errorf("listener %s: %w", name, err)
	}
	return &listenerv3.Listener{
		Name:             name,
		Address:          socketAddress(ip, port),
		FilterChains:     []*listenerv3.FilterChain{fc},
		TrafficDirection: dir,
	}, nil
}

// adsConfigSource says "fetch this over the same ADS stream", which is how
// every proxy talks to the control plane.
func adsConfigSource() *corev3.ConfigSource {
	return &corev3.ConfigSource{
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
		ResourceApiVersion:    corev3.ApiVersion_V3,
	}
}

func socketAddress(ip string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Protocol:      corev3.SocketAddress_TCP,
		Address:       ip,
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}

func pipeAddress(path string) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_Pipe{Pipe: &corev3.Pipe{Path: path}}}
}

// endpointAddress turns an endpoint written as "ip:port", "[ip6]:port" or
// "unix:///path" (Istio's Sidecar defaultEndpoint forms) into an address.
// instanceIP replaces the wildcards 0.0.0.0 and [::], which Istio reads as
// "the workload's own address".
func endpointAddress(s, instanceIP string) (*corev3.Address, error) {
	if path, ok := strings.CutPrefix(s, "unix://"); ok {
		if path == "" {
			return nil, fmt.Errorf("%q: empty unix socket path", s)
		}
		return pipeAddress(path), nil
	}
	host, portStr, err := net.SplitHostPort(s)
	if err != nil {
		return nil, fmt.Errorf("%q: want ip:port or unix:///path: %w", s, err)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil || port == 0 {
		return nil, fmt.Errorf("%q: port %q: want 1-65535", s, portStr)
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return nil, fmt.Errorf("%q: %q is not an IP address", s, host)
	}
	if ip.IsUnspecified() {
		host = instanceIP
	}
	return socketAddress(host, uint32(port)), nil
}

func listenerName(ip string, port uint32) string {
	return ip + "_" + strconv.FormatUint(uint64(port), 10)
}
