package translate

import (
	"fmt"
	"slices"

	xdstypev3 "github.com/cncf/xds/go/xds/type/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	statspb "istio.io/api/envoy/extensions/stats"

	"github.com/trellis-mesh/trellis/internal/model"
)

// istioStatsFilterName is Istio's telemetry filter (standard metrics and, in trellis-proxy, the
// metadata exchange that Istio runs as istio.metadata_exchange).
const istioStatsFilterName = "istio.stats"

// insertTelemetryFilters puts istio.stats right before the router, where Istio puts it: after
// fault and CORS, so that it sees the request as routed. The reporter follows the listener's
// traffic_direction in the proxy, as in Istio; the Host header may name the destination service
// only on the inbound side, where the client proxy chose it (outbound, the cluster name does).
func insertTelemetryFilters(h *hcmv3.HttpConnectionManager, dir corev3.TrafficDirection) error {
	cfg, err := typedStruct(&statspb.PluginConfig{
		DisableHostHeaderFallback: dir != corev3.TrafficDirection_INBOUND,
	})
	if err != nil {
		return fmt.Errorf("%s filter config: %w", istioStatsFilterName, err)
	}
	f := &hcmv3.HttpFilter{Name: istioStatsFilterName, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: cfg}}
	at := max(len(h.HttpFilters)-1, 0) // before the router
	h.HttpFilters = slices.Insert(h.HttpFilters, at, f)
	return nil
}

// typedStruct wraps m in an xds.type.v3.TypedStruct, as Istio ships the configs of its own
// extensions (whose protos Envoy's tooling, and go-control-plane's validation, do not know).
func typedStruct(m proto.Message) (*anypb.Any, error) {
	js, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
	if err != nil {
		return nil, err
	}
	var value structpb.Struct
	if err := protojson.Unmarshal(js, &value); err != nil {
		return nil, err
	}
	return anypb.New(&xdstypev3.TypedStruct{TypeUrl: "type.googleapis.com/" + string(m.ProtoReflect().Descriptor().FullName()), Value: &value})
}

// istioEndpointMetadata is Istio's istio.workload endpoint metadata,
// "name;namespace;canonical-service;canonical-revision;cluster", from which a client proxy's
// telemetry names the destination workload when the peer does not answer with its own identity.
// Only endpoints of a WorkloadEntry have a workload to name.
func istioEndpointMetadata(ep *model.Endpoint) *corev3.Metadata {
	we := ep.Workload
	if we == nil {
		return nil
	}
	service := firstNonEmpty(ep.Labels["service.istio.io/canonical-name"], ep.Labels["app"], we.Name)
	revision := firstNonEmpty(ep.Labels["service.istio.io/canonical-revision"], ep.Labels["version"], "latest")
	value := we.Name + ";" + we.Namespace + ";" + service + ";" + revision + ";"
	return &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
		"istio": {Fields: map[string]*structpb.Value{"workload": structpb.NewStringValue(value)}},
	}}
}

func firstNonEmpty(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}
