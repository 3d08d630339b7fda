package cpdebug

import (
	"encoding/json"
	"errors"
	"fmt"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/trellis-mesh/trellis/internal/model"
)

var errNoConfig = errors.New("no config applied yet")

// Resource is one Istio resource in /debug/configz, in the Kubernetes
// shape istiod prints (kind, apiVersion, metadata, spec), so its output can
// be fed back to kubectl or `trellis controlplane --config-dir` alike.
type Resource struct {
	Kind       string          `json:"kind"`
	APIVersion string          `json:"apiVersion"`
	Metadata   Metadata        `json:"metadata"`
	Spec       json.RawMessage `json:"spec"`
}

// Metadata is the part of Kubernetes object metadata Trellis keeps.
type Metadata struct {
	Name        string            `json:"name"`
	Namespace   string            `json:"namespace"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// networkingV1 is the API version every kind Trellis reads is served at;
// config accepts v1, v1beta1 and v1alpha3 and they share one schema.
const networkingV1 = "networking.istio.io/v1"

// configz renders every resource of the accepted config, kind by kind in
// the order a reader builds the mesh (services, workloads, then routing),
// each kind sorted by namespace and name as model.Config keeps them. Before
// any config is applied it is an empty list, as istiod's is when empty.
func configz(cfg *model.Config) ([]Resource, error) {
	out := []Resource{}
	if cfg == nil {
		return out, nil
	}
	var err error
	add := func(m model.Meta, spec proto.Message) {
		if err != nil {
			return
		}
		var raw json.RawMessage
		if raw, err = specJSON(spec); err != nil {
			err = fmt.Errorf("%s: %w", m.Key(), err)
			return
		}
		out = append(out, Resource{Kind: m.Kind, APIVersion: networkingV1, Spec: raw, Metadata: Metadata{
			Name: m.Name, Namespace: m.Namespace, Labels: m.Labels, Annotations: m.Annotations,
		}})
	}
	for _, r := range cfg.ServiceEntries {
		add(r.Meta, r.Spec)
	}
	for _, r := range cfg.WorkloadEntries {
		add(r.Meta, r.Spec)
	}
	for _, r := range cfg.VirtualServices {
		add(r.Meta, r.Spec)
	}
	for _, r := range cfg.DestinationRules {
		add(r.Meta, r.Spec)
	}
	for _, r := range cfg.Gateways {
		add(r.Meta, r.Spec)
	}
	for _, r := range cfg.Sidecars {
		add(r.Meta, r.Spec)
	}
	return out, err
}

// specJSON renders an Istio spec with the field names of its YAML
// (lowerCamelCase), as kubectl shows it.
func specJSON(m proto.Message) (json.RawMessage, error) {
	b, err := protojson.Marshal(m)
	if err != nil {
		return nil, err
	}
	return json.RawMessage(b), nil
}
