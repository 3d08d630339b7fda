package istiostats

import (
	"fmt"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	statspb "istio.io/api/envoy/extensions/stats"

	"github.com/trellis-mesh/trellis/internal/proxy/filters"
)

// Name is the filter's name in Istio's config, for HTTP and network filters alike.
const Name = "istio.stats"

// TypeURL is the type of its config.
const TypeURL = "type.googleapis.com/stats.PluginConfig"

// Factory registers the HTTP filter.
var Factory = &filters.Factory{
	Name:       Name,
	ConfigType: TypeURL,
	Parse: func(tc *anypb.Any, _ filters.Converters) (filters.Config, error) {
		return Parse(tc)
	},
}

// NetworkFactory registers the TCP filter.
var NetworkFactory = &filters.NetworkFactory{
	Name:       Name,
	ConfigType: TypeURL,
	Parse: func(tc *anypb.Any) (filters.ConnObserverConfig, error) {
		return Parse(tc)
	},
}

// Config is a parsed PluginConfig.
type Config struct {
	// ServerGateway is reporter SERVER_GATEWAY: report as the destination whatever the listener.
	ServerGateway bool
	// DisableHostHeaderFallback stops the Host header from naming the destination service when
	// the cluster does not.
	DisableHostHeaderFallback bool
}

// Parse converts a PluginConfig, plain or in a TypedStruct; nil gives the defaults.
func Parse(tc *anypb.Any) (*Config, error) {
	var pc statspb.PluginConfig
	if tc != nil {
		if err := unmarshal(tc, &pc); err != nil {
			return nil, err
		}
	}
	if err := filters.OnlyFields(&pc, "debug", "stat_prefix", "disable_host_header_fallback", "reporter"); err != nil {
		return nil, err
	}
	switch pc.GetStatPrefix() {
	case "", "istio", "istio_":
	default:
		return nil, fmt.Errorf("stat_prefix %q: only Istio's \"istio\" is %w", pc.GetStatPrefix(), filters.ErrUnsupported)
	}
	c := &Config{DisableHostHeaderFallback: pc.GetDisableHostHeaderFallback()}
	switch pc.GetReporter() {
	case statspb.Reporter_UNSPECIFIED:
	case statspb.Reporter_SERVER_GATEWAY:
		c.ServerGateway = true
	default:
		return nil, fmt.Errorf("reporter %d: unknown", pc.GetReporter())
	}
	return c, nil
}

func unmarshal(tc *anypb.Any, pc *statspb.PluginConfig) error {
	value, typeURL, ok := filters.TypedStructValue(tc)
	if !ok {
		if tc.GetTypeUrl() != TypeURL {
			return fmt.Errorf("type %q: want %s", tc.GetTypeUrl(), TypeURL)
		}
		return anypb.UnmarshalTo(tc, pc, proto.UnmarshalOptions{})
	}
	if typeURL != TypeURL {
		return fmt.Errorf("type_url %q: want %s", typeURL, TypeURL)
	}
	js, err := protojson.Marshal(value)
	if err != nil {
		return fmt.Errorf("value: %w", err)
	}
	if err := protojson.Unmarshal(js, pc); err != nil {
		return fmt.Errorf("value: %w", err)
	}
	return nil
}
