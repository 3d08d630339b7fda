package xds

import (
	"errors"
	"fmt"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/trellis-mesh/trellis/internal/model"
)

// Istio's node metadata keys that Trellis reads.
const (
	metaInterceptionMode = "INTERCEPTION_MODE"
	metaLabels           = "LABELS"
)

var errNoNode = errors.New("first request on the stream carries no node: every xDS client must identify itself")

// proxyFromNode builds the control plane's view of a proxy from what it sent
// in its first request: the Istio node ID and node metadata.
func proxyFromNode(node *corev3.Node) (*model.Proxy, error) {
	if node.GetId() == "" {
		return nil, errNoNode
	}
	p, err := model.ParseProxy(node.GetId())
	if err != nil {
		return nil, err
	}
	md := node.GetMetadata().GetFields()
	if v, ok := md[metaInterceptionMode]; ok {
		mode, err := interceptionMode(v)
		if err != nil {
			return nil, fmt.Errorf("node %q: metadata %s: %w", p.ID, metaInterceptionMode, err)
		}
		p.Interception = mode
	}
	if v, ok := md[metaLabels]; ok {
		labels, err := stringMap(v)
		if err != nil {
			return nil, fmt.Errorf("node %q: metadata %s: %w", p.ID, metaLabels, err)
		}
		p.Labels = labels
	}
	return p, nil
}

func interceptionMode(v *structpb.Value) (model.InterceptionMode, error) {
	s, ok := v.GetKind().(*structpb.Value_StringValue)
	if !ok {
		return "", errors.New("want a string")
	}
	switch m := model.InterceptionMode(s.StringValue); m {
	case model.InterceptNone, model.InterceptRedirect, "TPROXY":
		return m, nil
	default:
		return "", fmt.Errorf("%q: want NONE, REDIRECT or TPROXY", s.StringValue)
	}
}

func stringMap(v *structpb.Value) (map[string]string, error) {
	st, ok := v.GetKind().(*structpb.Value_StructValue)
	if !ok {
		return nil, errors.New("want a map of strings")
	}
	out := make(map[string]string, len(st.StructValue.GetFields()))
	for k, fv := range st.StructValue.GetFields() {
		s, ok := fv.GetKind().(*structpb.Value_StringValue)
		if !ok {
			return nil, fmt.Errorf("%s: want a string", k)
		}
		out[k] = s.StringValue
	}
	return out, nil
}
