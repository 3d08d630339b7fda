package apphealth

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/url"
	"strings"

	"golang.org/x/net/http/httpguts"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"
	"sigs.k8s.io/yaml"
)

// Probe is Istio's istio.networking.v1alpha3.ReadinessProbe, with its JSON names. Exactly one of
// HTTPGet, TCPSocket, Exec and GRPC is set. Zero timings and thresholds mean Istio's defaults.
type Probe struct {
	InitialDelaySeconds int `json:"initialDelaySeconds,omitempty"`
	TimeoutSeconds      int `json:"timeoutSeconds,omitempty"`
	PeriodSeconds       int `json:"periodSeconds,omitempty"`
	SuccessThreshold    int `json:"successThreshold,omitempty"`
	FailureThreshold    int `json:"failureThreshold,omitempty"`

	HTTPGet   *HTTPGet   `json:"httpGet,omitempty"`
	TCPSocket *TCPSocket `json:"tcpSocket,omitempty"`
	Exec      *Exec      `json:"exec,omitempty"`
	GRPC      *GRPC      `json:"grpc,omitempty"`
}

// HTTPGet is Istio's HTTPHealthCheckConfig: healthy when GET scheme://host:port/path answers
// 200-399.
type HTTPGet struct {
	Path        string   `json:"path,omitempty"`
	Port        int      `json:"port,omitempty"`
	Host        string   `json:"host,omitempty"`
	Scheme      string   `json:"scheme,omitempty"`
	HTTPHeaders []Header `json:"httpHeaders,omitempty"`
}

// Header is one request header of an HTTPGet.
type Header struct {
	Name  string `json:"name,omitempty"`
	Value string `json:"value,omitempty"`
}

// TCPSocket is Istio's TCPHealthCheckConfig: healthy when host:port accepts a connection.
type TCPSocket struct {
	Host string `json:"host,omitempty"`
	Port int    `json:"port,omitempty"`
}

// Exec is Istio's ExecHealthCheckConfig: healthy when the command (run directly, no shell) exits 0.
type Exec struct {
	Command []string `json:"command,omitempty"`
}

// GRPC is Istio's GrpcHealthCheckConfig: healthy when grpc.health.v1.Health/Check on the port
// answers SERVING for the service.
type GRPC struct {
	Port    int    `json:"port,omitempty"`
	Service string `json:"service,omitempty"`
}

// Istio's defaults (pkg/istio-agent/health fillInDefaults).
const (
	DefaultTimeoutSeconds   = 1
	DefaultPeriodSeconds    = 10
	DefaultSuccessThreshold = 1
	DefaultFailureThreshold = 1
	DefaultHTTPPath         = "/"
	DefaultHTTPScheme       = "http"
	// DefaultHost is where HTTP and TCP checks go without a host, and where gRPC checks always go:
	// the agent's choice (Kubernetes would use the pod IP).
	DefaultHost = "localhost"
)

// ProxyConfig is Istio's PROXY_CONFIG as the proxy uses it.
type ProxyConfig struct {
	// Metadata is the whole document, sent as the node metadata PROXY_CONFIG (a Struct, as Istio's
	// agent sends it): the control plane turns health checking on for a proxy whose
	// PROXY_CONFIG.readinessProbe is present.
	Metadata *structpb.Struct
	// ReadinessProbe is the document's readinessProbe, validated; nil when it has none.
	ReadinessProbe *Probe
}

const probeKey = "readinessProbe"

// ParseProxyConfig reads Istio's PROXY_CONFIG, a ProxyConfig (istio.mesh.v1alpha1) in YAML or
// JSON. Only readinessProbe is interpreted; the other fields travel to the control plane as they
// are. As protobuf's JSON mapping does, it takes top-level and probe field names in lowerCamelCase
// or in the proto's snake_case, and sends them on as lowerCamelCase. Errors name the field:
// "readinessProbe.httpGet.port: must be between 1 and 65535, got 0".
func ParseProxyConfig(data []byte) (*ProxyConfig, error) {
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, fmt.Errorf("not YAML or JSON: %w", err)
	}
	var doc any
	if err := json.Unmarshal(js, &doc); err != nil {
		return nil, fmt.Errorf("not YAML or JSON: %w", err)
	}
	if doc == nil { // an empty document
		doc = map[string]any{}
	}
	top, ok := doc.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("want a ProxyConfig object, got %s", jsonKind(doc))
	}
	// Only the top level is renamed: deeper down some fields (proxyMetadata, runtimeValues) are maps
	// whose keys are the user's own.
	if top, err = camelKeys("", top); err != nil {
		return nil, err
	}
	cfg := &ProxyConfig{}
	if raw, ok := top[probeKey]; ok && raw == nil {
		delete(top, probeKey) // an explicit null is no probe, as in protobuf
	} else if ok {
		if cfg.ReadinessProbe, err = decodeProbe(raw); err != nil {
			return nil, err
		}
		// The control plane gets the probe as Istio's agent would send it: known fields only, in
		// their JSON names, numbers as numbers.
		if top[probeKey], err = asJSONValue(cfg.ReadinessProbe); err != nil {
			return nil, err
		}
	}
	if cfg.Metadata, err = structpb.NewStruct(top); err != nil {
		return nil, fmt.Errorf("as node metadata: %w", err)
	}
	return cfg, nil
}

// ProxyConfigFromStruct reads a PROXY_CONFIG that is already node metadata, as an Envoy bootstrap
// written for Istio's agent carries it, so that a proxy whose metadata tells the control plane to
// expect health reports also runs the probe.
func ProxyConfigFromStruct(s *structpb.Struct) (*ProxyConfig, error) {
	js, err := protojson.Marshal(s)
	if err != nil {
		return nil, err
	}
	return ParseProxyConfig(js)
}

// decodeProbe turns the readinessProbe subtree into a validated Probe.
func decodeProbe(raw any) (*Probe, error) {
	m, ok := raw.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%s: want an object, got %s", probeKey, jsonKind(raw))
	}
	norm, err := camelTree(probeKey, m)
	if err != nil {
		return nil, err
	}
	js, err := json.Marshal(norm)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", probeKey, err)
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	var p Probe
	if err := dec.Decode(&p); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return nil, fmt.Errorf("%s.%s: want %s, got %s", probeKey, te.Field, kindOf(te.Type.Kind().String()), te.Value)
		}
		// encoding/json says `json: unknown field "x"` without the path; the message still names it.
		return nil, fmt.Errorf("%s: %s", probeKey, strings.TrimPrefix(err.Error(), "json: "))
	}
	if err := p.validate(probeKey); err != nil {
		return nil, err
	}
	return &p, nil
}

// Validate checks the probe as Istio's WorkloadGroup validation does: exactly one check method,
// ports 1-65535, no negative timings, and an exec command.
func (p *Probe) Validate() error {
	if p == nil {
		return errors.New("no probe")
	}
	return p.validate("")
}

func (p *Probe) validate(prefix string) error {
	path := func(field string) string {
		if prefix == "" {
			return field
		}
		return prefix + "." + field
	}
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", path(field), fmt.Sprintf(format, args...)))
	}
	for _, f := range []struct {
		name string
		v    int
	}{
		{"initialDelaySeconds", p.InitialDelaySeconds}, {"timeoutSeconds", p.TimeoutSeconds},
		{"periodSeconds", p.PeriodSeconds}, {"successThreshold", p.SuccessThreshold},
		{"failureThreshold", p.FailureThreshold},
	} {
		switch {
		case f.v < 0:
			bad(f.name, "must not be negative, got %d", f.v)
		case f.v > math.MaxInt32: // the proto's int32; also keeps seconds * time.Second from overflowing
			bad(f.name, "must be at most %d, got %d", math.MaxInt32, f.v)
		}
	}
	port := func(field string, n int) {
		if n < 1 || n > 65535 {
			bad(field, "must be between 1 and 65535, got %d", n)
		}
	}
	var methods []string
	if h := p.HTTPGet; h != nil {
		methods = append(methods, "httpGet")
		port("httpGet.port", h.Port)
		if s := h.Scheme; s != "" && !strings.EqualFold(s, "http") && !strings.EqualFold(s, "https") {
			bad("httpGet.scheme", "%q: want HTTP or HTTPS", s)
		}
		if h.Path != "" {
			if _, err := url.Parse(h.Path); err != nil {
				bad("httpGet.path", "%q is not a URL path", h.Path)
			}
		}
		if strings.ContainsAny(h.Host, "/?#@ ") {
			bad("httpGet.host", "%q is not a host name or IP address", h.Host)
		}
		for i, hd := range h.HTTPHeaders {
			if !httpguts.ValidHeaderFieldName(hd.Name) {
				bad(fmt.Sprintf("httpGet.httpHeaders[%d].name", i), "%q is not a valid header name", hd.Name)
			}
			if !httpguts.ValidHeaderFieldValue(hd.Value) {
				bad(fmt.Sprintf("httpGet.httpHeaders[%d].value", i), "%q is not a valid header value", hd.Value)
			}
		}
	}
	if t := p.TCPSocket; t != nil {
		methods = append(methods, "tcpSocket")
		port("tcpSocket.port", t.Port)
		if strings.ContainsAny(t.Host, "/?#@ ") {
			bad("tcpSocket.host", "%q is not a host name or IP address", t.Host)
		}
	}
	if e := p.Exec; e != nil {
		methods = append(methods, "exec")
		if len(e.Command) == 0 || e.Command[0] == "" {
			bad("exec.command", "required: the program and its arguments")
		}
	}
	if g := p.GRPC; g != nil {
		methods = append(methods, "grpc")
		port("grpc.port", g.Port)
	}
	switch len(methods) {
	case 0:
		errs = append(errs, fmt.Errorf("%s: one of httpGet, tcpSocket, exec or grpc is required", orProbe(prefix)))
	case 1:
	default:
		errs = append(errs, fmt.Errorf("%s: only one of httpGet, tcpSocket, exec or grpc may be set, got %s",
			orProbe(prefix), strings.Join(methods, " and ")))
	}
	return errors.Join(errs...)
}

func orProbe(prefix string) string {
	if prefix == "" {
		return "probe"
	}
	return prefix
}

// withDefaults is the probe with Istio's defaults filled in, as the agent runs it.
func (p Probe) withDefaults() Probe {
	or := func(v, def int) int {
		if v == 0 {
			return def
		}
		return v
	}
	p.TimeoutSeconds = or(p.TimeoutSeconds, DefaultTimeoutSeconds)
	p.PeriodSeconds = or(p.PeriodSeconds, DefaultPeriodSeconds)
	p.SuccessThreshold = or(p.SuccessThreshold, DefaultSuccessThreshold)
	p.FailureThreshold = or(p.FailureThreshold, DefaultFailureThreshold)
	if h := p.HTTPGet; h != nil {
		c := *h
		if c.Path == "" {
			c.Path = DefaultHTTPPath
		}
		c.Scheme = strings.ToLower(c.Scheme)
		if c.Scheme == "" {
			c.Scheme = DefaultHTTPScheme
		}
		if c.Host == "" {
			c.Host = DefaultHost
		}
		p.HTTPGet = &c
	}
	if t := p.TCPSocket; t != nil {
		c := *t
		if c.Host == "" {
			c.Host = DefaultHost
		}
		p.TCPSocket = &c
	}
	return p
}

// camelKeys renames the snake_case keys of one object level to lowerCamelCase, refusing a field
// given under both names (protobuf's JSON parser refuses it too).
func camelKeys(path string, m map[string]any) (map[string]any, error) {
	out := make(map[string]any, len(m))
	for k, v := range m {
		name := lowerCamel(k)
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("%s: given twice (as %s and as its snake_case name)", join(path, name), name)
		}
		out[name] = v
	}
	return out, nil
}

// camelTree is camelKeys all the way down: every key under a readinessProbe is a field name.
func camelTree(path string, v any) (any, error) {
	switch v := v.(type) {
	case map[string]any:
		m, err := camelKeys(path, v)
		if err != nil {
			return nil, err
		}
		for k, child := range m {
			if m[k], err = camelTree(join(path, k), child); err != nil {
				return nil, err
			}
		}
		return m, nil
	case []any:
		out := make([]any, len(v))
		for i, child := range v {
			var err error
			if out[i], err = camelTree(fmt.Sprintf("%s[%d]", path, i), child); err != nil {
				return nil, err
			}
		}
		return out, nil
	}
	return v, nil
}

func join(path, field string) string {
	if path == "" {
		return field
	}
	return path + "." + field
}

// lowerCamel is protobuf's JSON name of a snake_case field name ("http_get" → "httpGet"); names
// without an underscore are left alone.
func lowerCamel(s string) string {
	if !strings.Contains(s, "_") {
		return s
	}
	var b strings.Builder
	upper := false
	for _, r := range s {
		switch {
		case r == '_':
			upper = true
		case upper:
			b.WriteString(strings.ToUpper(string(r)))
			upper = false
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// asJSONValue is v as the generic JSON value structpb takes.
func asJSONValue(v any) (any, error) {
	js, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var out any
	err = json.Unmarshal(js, &out)
	return out, err
}

func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case []any:
		return "a list"
	case string:
		return "a string"
	case float64:
		return "a number"
	case bool:
		return "a boolean"
	}
	return "an object"
}

// kindOf names a Go kind the way a YAML author thinks of it.
func kindOf(kind string) string {
	switch kind {
	case "int", "int64", "int32", "uint32":
		return "a whole number"
	case "string":
		return "a string"
	case "slice":
		return "a list"
	case "struct", "ptr", "map":
		return "an object"
	}
	return kind
}

// GetMetadata is c.Metadata, nil for a nil c.
func (c *ProxyConfig) GetMetadata() *structpb.Struct {
	if c == nil {
		return nil
	}
	return c.Metadata
}
