package proxy

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"sigs.k8s.io/yaml"

	"github.com/trellis-mesh/trellis/internal/proxy/apphealth"

	// Registers the types a bootstrap's typed_config fields may name.
	_ "github.com/trellis-mesh/trellis/internal/proxy/xdsconfig"
)

// Version is reported to the control plane as the node's user agent version.
var Version = "dev"

// LoadBootstrap reads an Envoy bootstrap file, YAML or JSON.
func LoadBootstrap(path string) (*bootstrapv3.Bootstrap, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read bootstrap: %w", err)
	}
	b, err := ParseBootstrap(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return b, nil
}

// ParseBootstrap parses an Envoy bootstrap in YAML or JSON. Unknown fields are errors, as in Envoy.
func ParseBootstrap(data []byte) (*bootstrapv3.Bootstrap, error) {
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, fmt.Errorf("parse bootstrap YAML: %w", err)
	}
	var b bootstrapv3.Bootstrap
	if err := protojson.Unmarshal(js, &b); err != nil {
		return nil, fmt.Errorf("parse bootstrap: %w", err)
	}
	return &b, nil
}

// buildNode is the bootstrap's node with the options' identity laid over it.
func buildNode(base *corev3.Node, opts *Options) *corev3.Node {
	node := &corev3.Node{}
	if base != nil {
		node.Id, node.Cluster, node.Metadata, node.Locality = base.GetId(), base.GetCluster(), base.GetMetadata(), base.GetLocality()
	}
	if opts.NodeID != "" {
		node.Id = opts.NodeID
	}
	if opts.Cluster != "" {
		node.Cluster = opts.Cluster
	}
	if node.Cluster == "" {
		node.Cluster = clusterFromNodeID(node.Id)
	}
	if len(opts.Metadata) > 0 {
		if node.Metadata == nil {
			node.Metadata = &structpb.Struct{Fields: map[string]*structpb.Value{}}
		}
		for k, v := range opts.Metadata {
			node.Metadata.Fields[k] = structpb.NewStringValue(v)
		}
	}
	if len(opts.Labels) > 0 {
		if node.Metadata == nil {
			node.Metadata = &structpb.Struct{}
		}
		if node.Metadata.Fields == nil {
			node.Metadata.Fields = map[string]*structpb.Value{}
		}
		labels := node.Metadata.GetFields()["LABELS"].GetStructValue()
		if labels == nil {
			labels = &structpb.Struct{}
		}
		if labels.Fields == nil {
			labels.Fields = map[string]*structpb.Value{}
		}
		for k, v := range opts.Labels {
			labels.Fields[k] = structpb.NewStringValue(v)
		}
		node.Metadata.Fields["LABELS"] = structpb.NewStructValue(labels)
	}
	if md := opts.ProxyConfig.GetMetadata(); md != nil {
		if node.Metadata == nil {
			node.Metadata = &structpb.Struct{}
		}
		if node.Metadata.Fields == nil {
			node.Metadata.Fields = map[string]*structpb.Value{}
		}
		node.Metadata.Fields[KeyProxyConfig] = structpb.NewStructValue(proto.Clone(md).(*structpb.Struct))
	}
	node.UserAgentName = "trellis-proxy"
	node.UserAgentVersionType = &corev3.Node_UserAgentVersion{UserAgentVersion: Version}
	return node
}

// readinessProbe is the application probe to run: the ProxyConfig option's, else that of a
// PROXY_CONFIG the bootstrap's node metadata carries, so that the proxy runs a probe whenever its
// metadata tells the control plane to wait for health reports.
func readinessProbe(node *corev3.Node, pc *apphealth.ProxyConfig) (*apphealth.Probe, error) {
	if pc != nil {
		return pc.ReadinessProbe, nil
	}
	md := node.GetMetadata().GetFields()[KeyProxyConfig].GetStructValue()
	if md.GetFields()["readinessProbe"] == nil {
		return nil, nil
	}
	cfg, err := apphealth.ProxyConfigFromStruct(md)
	if err != nil {
		return nil, fmt.Errorf("bootstrap: node.metadata.%s: %w", KeyProxyConfig, err)
	}
	return cfg.ReadinessProbe, nil
}

// clusterFromNodeID derives node.cluster from an Istio node ID
// ("sidecar~127.0.1.3~reviews-v1.default~default.svc.cluster.local" gives "reviews-v1.default"):
// the workload and its namespace, which is what Istio's service cluster names.
func clusterFromNodeID(id string) string {
	parts := strings.Split(id, "~")
	if len(parts) == 4 && parts[2] != "" {
		return parts[2]
	}
	return ""
}

// xdsAddress finds the control plane: the explicit address, else the first endpoint of the static
// cluster that the bootstrap's ads_config names.
func xdsAddress(b *bootstrapv3.Bootstrap, explicit string) (string, error) {
	if explicit != "" {
		return explicit, nil
	}
	ads := b.GetDynamicResources().GetAdsConfig()
	if ads == nil {
		if b.GetDynamicResources().GetLdsConfig() != nil || b.GetDynamicResources().GetCdsConfig() != nil {
			return "", errors.New("bootstrap: dynamic_resources without ads_config: give the control plane with --xds-address")
		}
		return "", nil
	}
	services := ads.GetGrpcServices()
	if len(services) == 0 {
		return "", errors.New("bootstrap: dynamic_resources.ads_config.grpc_services is empty")
	}
	if g := services[0].GetGoogleGrpc(); g != nil {
		return strings.TrimPrefix(g.GetTargetUri(), "dns:///"), nil
	}
	name := services[0].GetEnvoyGrpc().GetClusterName()
	for _, c := range b.GetStaticResources().GetClusters() {
		if c.GetName() != name {
			continue
		}
		for _, loc := range c.GetLoadAssignment().GetEndpoints() {
			for _, ep := range loc.GetLbEndpoints() {
				sa := ep.GetEndpoint().GetAddress().GetSocketAddress()
				if sa != nil {
					return net.JoinHostPort(sa.GetAddress(), strconv.FormatUint(uint64(sa.GetPortValue()), 10)), nil
				}
			}
		}
		return "", fmt.Errorf("bootstrap: xDS cluster %q has no endpoint", name)
	}
	return "", fmt.Errorf("bootstrap: ads_config names cluster %q, which is not among static_resources.clusters", name)
}

// adminAddress is the bootstrap's admin address when it has one, else the option, else Envoy's
// usual 127.0.0.1:15000.
func adminAddress(b *bootstrapv3.Bootstrap, opt string) string {
	if sa := b.GetAdmin().GetAddress().GetSocketAddress(); sa != nil {
		return net.JoinHostPort(sa.GetAddress(), strconv.FormatUint(uint64(sa.GetPortValue()), 10))
	}
	if opt != "" {
		return opt
	}
	return DefaultAdminAddress
}
