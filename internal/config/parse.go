package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/proto"
	networking "istio.io/api/networking/v1alpha3"
	networkingv1beta1 "istio.io/api/networking/v1beta1"
	security "istio.io/api/security/v1beta1"
	telemetry "istio.io/api/telemetry/v1alpha1"

	"github.com/trellis-mesh/trellis/internal/model"
)

const networkingGroup = "networking.istio.io"

// networkingVersions are the apiVersions Istio serves its networking kinds
// at; the schemas are the same, so all are read into v1alpha3 types.
var networkingVersions = []string{"v1", "v1beta1", "v1alpha3"}

// supportedKinds are the kinds Trellis translates.
var supportedKinds = map[string]func() proto.Message{
	"VirtualService":  func() proto.Message { return &networking.VirtualService{} },
	"DestinationRule": func() proto.Message { return &networking.DestinationRule{} },
	"ServiceEntry":    func() proto.Message { return &networking.ServiceEntry{} },
	"WorkloadEntry":   func() proto.Message { return &networking.WorkloadEntry{} },
	"WorkloadGroup":   func() proto.Message { return &networking.WorkloadGroup{} },
	"Gateway":         func() proto.Message { return &networking.Gateway{} },
	"Sidecar":         func() proto.Message { return &networking.Sidecar{} },
}

const securityGroup = "security.istio.io"

// securityVersions are the apiVersions Istio serves its security kinds at,
// read into the v1beta1 types (one schema).
var securityVersions = []string{"v1", "v1beta1"}

// securityKinds are the security.istio.io kinds Trellis translates.
var securityKinds = map[string]func() proto.Message{
	"PeerAuthentication":    func() proto.Message { return &security.PeerAuthentication{} },
	"AuthorizationPolicy":   func() proto.Message { return &security.AuthorizationPolicy{} },
	"RequestAuthentication": func() proto.Message { return &security.RequestAuthentication{} },
}

// pendingKinds are Istio kinds Trellis knows but does not handle yet: they
// are ignored with a warning, not rejected, so an Istio config dir loads.
var pendingKinds = map[string]bool{
	"EnvoyFilter": true,
	"WasmPlugin":  true,
}

// pendingGroups are API groups whose every kind is ignored with a warning.
var pendingGroups = map[string]bool{
	"extensions.istio.io":       true,
	"gateway.networking.k8s.io": true,
}

// ignoredMetaFields are ObjectMeta fields `kubectl get -o yaml` writes;
// accepting them lets such output be dropped into the config dir.
var ignoredMetaFields = map[string]bool{
	"generateName": true, "uid": true, "resourceVersion": true, "generation": true,
	"creationTimestamp": true, "deletionTimestamp": true, "deletionGracePeriodSeconds": true,
	"ownerReferences": true, "finalizers": true, "managedFields": true, "selfLink": true,
}

// document is one resource read from a file, before it goes into a Config.
type document struct {
	meta  model.Meta
	spec  proto.Message
	lines map[string]int // field path → line
}

// fileParser turns the bytes of one file into documents, collecting every
// problem rather than stopping at the first.
type fileParser struct {
	file  string
	docs  []*document
	warns []Warning
	errs  []*ValidationError
}

// parseFile parses and validates each resource of a multi-document YAML
// file on its own; checks across resources are LoadDir's.
func parseFile(file string, data []byte) *fileParser {
	p := &fileParser{file: file}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			// The YAML stream cannot be resumed after a syntax error.
			p.errs = append(p.errs, yamlError(file, err))
			break
		}
		p.document(&n)
	}
	return p
}

var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// yamlParserProblems are yaml.v3's parser (not scanner) errors, whose line
// it reports 0-based; see go.yaml.in/yaml/v3 parser.fail.
var yamlParserProblems = map[string]bool{
	"did not find expected ',' or ']'": true, "did not find expected ',' or '}'": true,
	"did not find expected '-' indicator": true, "did not find expected <document start>": true,
	"did not find expected <stream-start>": true, "did not find expected key": true,
	"did not find expected node content": true, "found duplicate %TAG directive": true,
	"found duplicate %YAML directive": true, "found incompatible YAML document": true,
	"found undefined tag handle": true,
}

func yamlError(file string, err error) *ValidationError {
	msg := err.Error()
	line := 0
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = m[2]
		if yamlParserProblems[msg] {
			line++
		}
	}
	msg = strings.TrimPrefix(msg, "yaml: ")
	return &ValidationError{Source: model.Source{File: file, Line: line}, Reason: "invalid YAML: " + msg}
}

func (p *fileParser) document(n *yaml.Node) {
	if n.Kind != yaml.DocumentNode || len(n.Content) == 0 {
		return
	}
	c := newConverter()
	root := c.visit(n.Content[0], "", 0)
	if root == nil || isNull(root) {
		return // an empty document, e.g. a trailing "---"
	}
	d := &document{meta: model.Meta{Source: model.Source{File: p.file, Line: root.Line}}, lines: c.lines}
	if root.Kind != yaml.MappingNode {
		p.fail(d, "", root.Line, fmt.Sprintf("a resource must be a mapping with apiVersion, kind, metadata and spec, got %s", describe(root)))
		return
	}
	var apiVersion string
	var metaNode, specNode *yaml.Node
	for _, f := range c.pairs(root, "", 0) {
		c.lines[f.key] = f.line
		switch f.key {
		case "apiVersion", "kind":
			v := c.visit(f.value, f.key, 1)
			if v == nil || v.Kind != yaml.ScalarNode || isNull(v) {
				c.fail(f.key, f.line, "must be a string")
				continue
			}
			if f.key == "kind" {
				d.meta.Kind = v.Value
			} else {
				apiVersion = v.Value
			}
		case "metadata":
			metaNode = f.value
		case "spec":
			specNode = f.value
		case "status":
			// Written by controllers, not the user: never an error. Its
			// conditions are read (a WorkloadEntry's Healthy).
			d.meta.Conditions = conditions(f.value)
		default:
			c.fail(f.key, f.line, "unknown field; a resource has apiVersion, kind, metadata and spec%s",
				suggest(f.key, []string{"apiVersion", "kind", "metadata", "spec"}))
		}
	}
	c.metadata(&d.meta, metaNode)

	newSpec, ok := p.classify(c, d, apiVersion)
	if !ok {
		p.flush(d, c.errs)
		return
	}
	spec := newSpec()
	js, present := c.message(spec.ProtoReflect().Descriptor(), orEmpty(specNode), "spec", 1)
	if len(c.errs) > 0 {
		p.flush(d, c.errs)
		return
	}
	if present {
		raw, err := json.Marshal(js)
		if err == nil {
			err = spec.(json.Unmarshaler).UnmarshalJSON(raw)
		}
		if err != nil {
			// The converter checks what the unmarshaler would reject, so
			// this is a gap in it; report it rather than lose it.
			p.fail(d, "spec", d.lineOf("spec"), err.Error())
			return
		}
	}
	d.spec = spec
	errs := validateMeta(d)
	errs = append(errs, validateSpec(d)...)
	if len(errs) > 0 {
		p.flush(d, errs)
		return
	}
	p.docs = append(p.docs, d)
}

func orEmpty(n *yaml.Node) *yaml.Node {
	if n == nil {
		return &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	}
	return n
}

// classify decides from apiVersion and kind whether the document is read
// (returning its spec constructor), ignored with a warning, or rejected.
func (p *fileParser) classify(c *converter, d *document, apiVersion string) (func() proto.Message, bool) {
	kind := d.meta.Kind
	if kind == "" {
		c.fail("kind", d.meta.Source.Line, "required; every document needs apiVersion and kind (only mesh.yaml holds a bare MeshConfig)")
		return nil, false
	}
	group, version, _ := strings.Cut(apiVersion, "/")
	newSpec, supported := supportedKinds[kind]
	switch {
	case kind == proxyConfigKind && group == networkingGroup:
		if version != proxyConfigVersion {
			c.fail("apiVersion", d.lineOf("apiVersion"), "%q is not served for %s; want %s/%s", apiVersion, kind, networkingGroup, proxyConfigVersion)
			return nil, false
		}
		return func() proto.Message { return &networkingv1beta1.ProxyConfig{} }, true
	case kind == proxyConfigKind:
		c.fail("apiVersion", d.lineOf("apiVersion"), "%q: %s is read from %s/%s", apiVersion, kind, networkingGroup, proxyConfigVersion)
		return nil, false
	case kind == telemetryKind && group == telemetryGroup:
		if !slices.Contains(telemetryVersions, version) {
			c.fail("apiVersion", d.lineOf("apiVersion"), "%q is not served for %s; want %s/%s", apiVersion, kind, telemetryGroup, strings.Join(telemetryVersions, ", "))
			return nil, false
		}
		return func() proto.Message { return &telemetry.Telemetry{} }, true
	case kind == telemetryKind:
		c.fail("apiVersion", d.lineOf("apiVersion"), "%q: %s is read from %s/%s", apiVersion, kind, telemetryGroup, telemetryVersions[0])
		return nil, false
	case securityKinds[kind] != nil && group == securityGroup:
		if !slices.Contains(securityVersions, version) {
			c.fail("apiVersion", d.lineOf("apiVersion"), "%q is not served for %s; want %s/%s", apiVersion, kind, securityGroup, strings.Join(securityVersions, ", "))
			return nil, false
		}
		return securityKinds[kind], true
	case securityKinds[kind] != nil:
		c.fail("apiVersion", d.lineOf("apiVersion"), "%q: %s is read from %s/%s", apiVersion, kind, securityGroup, securityVersions[0])
		return nil, false
	case supported && group == networkingGroup:
		if !slices.Contains(networkingVersions, version) {
			c.fail("apiVersion", d.lineOf("apiVersion"), "%q is not served for %s; want %s/%s", apiVersion, kind, networkingGroup, strings.Join(networkingVersions, ", "))
			return nil, false
		}
		return newSpec, true
	case pendingGroups[group] || (pendingKinds[kind] && strings.HasSuffix(group, ".istio.io")):
		p.warns = append(p.warns, Warning{
			Source:  d.meta.Source,
			Message: fmt.Sprintf("%s %s/%s: %s %s is not supported yet; ignored", kind, d.meta.Namespace, d.meta.Name, apiVersion, kind),
		})
		return nil, false
	case supported || pendingKinds[kind]:
		c.fail("apiVersion", d.lineOf("apiVersion"), "%q: %s is read from %s/%s", apiVersion, kind, networkingGroup, networkingVersions[0])
		return nil, false
	}
	known := slices.Collect(func(yield func(string) bool) {
		if !yield(telemetryKind) || !yield(proxyConfigKind) {
			return
		}
		for k := range supportedKinds {
			if !yield(k) {
				return
			}
		}
		for k := range securityKinds {
			if !yield(k) {
				return
			}
		}
		for k := range pendingKinds {
			if !yield(k) {
				return
			}
		}
	})
	slices.Sort(known)
	c.fail("kind", d.lineOf("kind"), "unknown kind %q (apiVersion %q)%s", kind, apiVersion, suggest(kind, known))
	return nil, false
}

// metadata reads name, namespace, labels and annotations into m.
func (c *converter) metadata(m *model.Meta, n *yaml.Node) {
	m.Namespace = "default"
	if n == nil {
		return
	}
	n = c.visit(n, "metadata", 1)
	if n == nil || isNull(n) {
		return
	}
	if n.Kind != yaml.MappingNode {
		c.fail("metadata", n.Line, "must be a mapping, got %s", describe(n))
		return
	}
	for _, f := range c.pairs(n, "metadata", 1) {
		path := "metadata." + f.key
		c.lines[path] = f.line
		switch f.key {
		case "name", "namespace":
			v := c.visit(f.value, path, 2)
			if v == nil || isNull(v) {
				continue
			}
			if v.Kind != yaml.ScalarNode {
				c.fail(path, f.line, "must be a string, got %s", describe(v))
				continue
			}
			if f.key == "name" {
				m.Name = v.Value
			} else if v.Value != "" {
				m.Namespace = v.Value
			}
		case "labels", "annotations":
			kv := c.stringMap(f.value, path)
			if f.key == "labels" {
				m.Labels = kv
			} else {
				m.Annotations = kv
			}
		default:
			if !ignoredMetaFields[f.key] {
				c.fail(path, f.line, "unknown field%s", suggest(f.key, []string{"name", "namespace", "labels", "annotations"}))
			}
		}
	}
}

func (c *converter) stringMap(n *yaml.Node, path string) map[string]string {
	n = c.visit(n, path, 2)
	if n == nil || isNull(n) {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		c.fail(path, n.Line, "must be a mapping, got %s", describe(n))
		return nil
	}
	out := map[string]string{}
	for _, f := range c.pairs(n, path, 2) {
		epath := path + "[" + f.key + "]"
		c.lines[epath] = f.line
		v := c.visit(f.value, epath, 3)
		if v == nil {
			continue
		}
		if v.Kind != yaml.ScalarNode {
			c.fail(epath, f.line, "must be a string, got %s", describe(v))
			continue
		}
		out[f.key] = v.Value
	}
	return out
}

// lineOf is the line of path, or of its nearest ancestor that has one, or
// of the document's start.
func (d *document) lineOf(path string) int {
	for path != "" {
		if line, ok := d.lines[path]; ok {
			return line
		}
		path = parentPath(path)
	}
	return d.meta.Source.Line
}

func parentPath(path string) string {
	if strings.HasSuffix(path, "]") {
		if i := strings.LastIndex(path, "["); i >= 0 {
			return path[:i]
		}
	}
	if i := strings.LastIndex(path, "."); i >= 0 {
		return path[:i]
	}
	return ""
}

func (p *fileParser) fail(d *document, field string, line int, reason string) {
	p.errs = append(p.errs, d.errorAt(field, line, reason))
}

func (p *fileParser) flush(d *document, errs []fieldErr) {
	for _, e := range errs {
		line := e.line
		if line == 0 {
			line = d.lineOf(e.path)
		}
		p.errs = append(p.errs, d.errorAt(e.path, line, e.reason))
	}
}

func (d *document) errorAt(field string, line int, reason string) *ValidationError {
	return &ValidationError{
		Source:    model.Source{File: d.meta.Source.File, Line: line},
		Kind:      d.meta.Kind,
		Namespace: d.meta.Namespace,
		Name:      d.meta.Name,
		Field:     field,
		Reason:    reason,
	}
}

// conditions reads status.conditions leniently: whatever does not have
// the shape of an IstioCondition is skipped.
func conditions(n *yaml.Node) []model.Condition {
	var status struct {
		Conditions []any `yaml:"conditions"`
	}
	if n == nil || n.Decode(&status) != nil {
		return nil
	}
	var out []model.Condition
	for _, c := range status.Conditions {
		m, _ := c.(map[string]any)
		t, _ := m["type"].(string)
		st, _ := m["status"].(string)
		msg, _ := m["message"].(string)
		if t != "" {
			out = append(out, model.Condition{Type: t, Status: st, Message: msg})
		}
	}
	return out
}
