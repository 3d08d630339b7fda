package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"

	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/proto"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"

	"github.com/trellis-mesh/trellis/internal/model"
)

// meshFiles are the names of files read as a bare MeshConfig: the YAML
// under the `mesh` key of Istio's istio ConfigMap.
var meshFiles = []string{"mesh.yaml", "mesh.yml"}

const meshKind = "MeshConfig"

// parseMesh reads a MeshConfig; fields the user leaves out keep
// model.DefaultMesh's values, as Istio applies user mesh config over its
// defaults.
func parseMesh(file string, data []byte) (*meshv1alpha1.MeshConfig, []*ValidationError) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var n yaml.Node
	err := dec.Decode(&n)
	if errors.Is(err, io.EOF) {
		return model.DefaultMesh(), nil
	}
	if err != nil {
		return nil, []*ValidationError{yamlError(file, err)}
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		line := extra.Line
		if err != nil {
			return nil, []*ValidationError{yamlError(file, err)}
		}
		return nil, []*ValidationError{{Source: model.Source{File: file, Line: line}, Kind: meshKind,
			Reason: "must hold a single YAML document"}}
	}
	user := &meshv1alpha1.MeshConfig{}
	d := &document{meta: model.Meta{Kind: meshKind, Source: model.Source{File: file, Line: 1}}}
	if len(n.Content) > 0 {
		d.meta.Source.Line = n.Content[0].Line
		c := newConverter()
		d.lines = c.lines
		js, present := c.message(user.ProtoReflect().Descriptor(), n.Content[0], "", 0)
		if len(c.errs) > 0 {
			p := &fileParser{file: file}
			p.flush(d, c.errs)
			return nil, p.errs
		}
		if present {
			raw, err := json.Marshal(js)
			if err == nil {
				err = user.UnmarshalJSON(raw)
			}
			if err != nil {
				return nil, []*ValidationError{d.errorAt("", d.meta.Source.Line, err.Error())}
			}
		}
	}
	mesh := model.DefaultMesh()
	proto.Merge(mesh, user)
	var c checker
	validateMeshTelemetry(&c, mesh)
	validateMeshExtAuthz(&c, mesh) // validate_authorizationpolicy.go
	if len(c.errs) > 0 {
		p := &fileParser{file: file}
		p.flush(d, c.errs)
		return nil, p.errs
	}
	return mesh, nil
}
