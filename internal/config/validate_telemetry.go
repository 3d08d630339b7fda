package config

import (
	"fmt"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	telemetry "istio.io/api/telemetry/v1alpha1"
)

const (
	telemetryGroup = "telemetry.istio.io"
	telemetryKind  = "Telemetry"
)

// telemetryVersions are the apiVersions Istio serves Telemetry at, read into one type.
var telemetryVersions = []string{"v1", "v1alpha1"}

// onlySet reports each populated field of m not in allowed, at path: what Trellis does not
// implement is refused, never silently ignored.
func onlySet(c *checker, path string, m proto.Message, allowed ...string) {
	m.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, _ protoreflect.Value) bool {
		if !slices.Contains(allowed, fd.JSONName()) {
			c.errorf(joinPath(path, fd.JSONName()), "not supported by Trellis")
		}
		return true
	})
}

// validateTelemetry checks a Telemetry resource: the tracing and access logging Trellis
// translates, with Istio's rules for them.
func validateTelemetry(c *checker, t *telemetry.Telemetry) {
	onlySet(c, "spec", t, "selector", "tracing", "accessLogging")
	if s := t.GetSelector(); s != nil {
		if len(s.GetMatchLabels()) == 0 {
			c.errorf("spec.selector.matchLabels", "at least one label is required")
		}
		validateSelector(c, "spec.selector.matchLabels", s.GetMatchLabels())
	}
	if len(t.GetTracing()) > 1 {
		c.errorf("spec.tracing", "at most one tracing entry is supported, got %d", len(t.GetTracing()))
	}
	for i, tr := range t.GetTracing() {
		p := fmt.Sprintf("spec.tracing[%d]", i)
		onlySet(c, p, tr, "providers", "randomSamplingPercentage", "disableSpanReporting", "customTags", "match", "useRequestIdForTraceSampling")
		validateWorkloadMode(c, p+".match.mode", tr.GetMatch().GetMode())
		if len(tr.GetProviders()) > 1 {
			c.errorf(p+".providers", "only one tracing provider per workload is supported (as in Istio), got %d", len(tr.GetProviders()))
		}
		validateProviderRefs(c, p+".providers", tr.GetProviders())
		if s := tr.GetRandomSamplingPercentage(); s != nil && (s.GetValue() < 0 || s.GetValue() > 100) {
			c.errorf(p+".randomSamplingPercentage", "must be between 0 and 100, got %v", s.GetValue())
		}
		if u := tr.GetUseRequestIdForTraceSampling(); u != nil && !u.GetValue() {
			c.errorf(p+".useRequestIdForTraceSampling", "false is not supported: trellis-proxy always samples new traces by x-request-id")
		}
		for _, name := range sortedKeys(tr.GetCustomTags()) {
			tp := p + ".customTags[" + name + "]"
			switch ct := tr.GetCustomTags()[name]; {
			case ct.GetLiteral() != nil, ct.GetEnvironment() != nil:
			case ct.GetHeader() != nil:
				if ct.GetHeader().GetName() == "" {
					c.errorf(tp+".header.name", "required")
				}
			case ct.GetFormatter() != nil:
				c.errorf(tp+".formatter", "not supported by Trellis; use literal, environment or header")
			default:
				c.errorf(tp, "set one of literal, environment or header")
			}
		}
	}
	for i, al := range t.GetAccessLogging() {
		p := fmt.Sprintf("spec.accessLogging[%d]", i)
		onlySet(c, p, al, "providers", "disabled", "match", "filter")
		validateWorkloadMode(c, p+".match.mode", al.GetMatch().GetMode())
		validateProviderRefs(c, p+".providers", al.GetProviders())
		if f := al.GetFilter(); f != nil {
			c.errorf(p+".filter.expression", "CEL filter expressions are not supported by Trellis; remove the filter")
		}
	}
}

func validateWorkloadMode(c *checker, path string, m telemetry.WorkloadMode) {
	if m != telemetry.WorkloadMode_CLIENT_AND_SERVER {
		c.errorf(path, "%s is not supported by Trellis: telemetry applies to client and server sides alike", m)
	}
}

func validateProviderRefs(c *checker, path string, refs []*telemetry.ProviderRef) {
	for i, r := range refs {
		if r.GetName() == "" {
			c.errorf(fmt.Sprintf("%s[%d].name", path, i), "required")
		}
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// Kinds of extension providers Trellis translates, by what they serve.
const (
	providerKindOpenTelemetry = "opentelemetry"
	providerKindZipkin        = "zipkin"
	providerKindFileLog       = "envoyFileAccessLog"
	// builtinEnvoyProvider is Istio's built-in access log provider: the file of accessLogFile (or
	// /dev/stdout), in accessLogFormat and accessLogEncoding.
	builtinEnvoyProvider = "envoy"
)

// providerKind is the oneof set in an extension provider, by its JSON name.
func providerKind(p *meshv1alpha1.MeshConfig_ExtensionProvider) string {
	od := p.ProtoReflect().Descriptor().Oneofs().ByName("provider")
	if od == nil {
		return ""
	}
	if fd := p.ProtoReflect().WhichOneof(od); fd != nil {
		return fd.JSONName()
	}
	return ""
}

// validateMeshTelemetry checks the MeshConfig fields that tracing and access logs read.
func validateMeshTelemetry(c *checker, m *meshv1alpha1.MeshConfig) {
	names := map[string]int{}
	for i, p := range m.GetExtensionProviders() {
		path := fmt.Sprintf("extensionProviders[%d]", i)
		switch {
		case p.GetName() == "":
			c.errorf(path+".name", "required")
		case p.GetName() == builtinEnvoyProvider:
			c.errorf(path+".name", "%q is Istio's built-in access log provider; choose another name", p.GetName())
		default:
			if first, dup := names[p.GetName()]; dup {
				c.errorf(path+".name", "duplicate provider %q (also extensionProviders[%d])", p.GetName(), first)
			}
			names[p.GetName()] = i
		}
		switch kind := providerKind(p); kind {
		case providerKindOpenTelemetry:
			o := p.GetOpentelemetry()
			kp := path + "." + kind
			onlySet(c, kp, o, "service", "port", "maxTagLength", "resourceDetectors")
			validateProviderService(c, kp, o.GetService(), o.GetPort())
		case providerKindZipkin:
			z := p.GetZipkin()
			kp := path + "." + kind
			onlySet(c, kp, z, "service", "port", "maxTagLength", "enable64bitTraceId", "path")
			validateProviderService(c, kp, z.GetService(), z.GetPort())
			if z.GetPath() != "" && !strings.HasPrefix(z.GetPath(), "/") {
				c.errorf(kp+".path", "must start with /")
			}
		case providerKindFileLog:
			f := p.GetEnvoyFileAccessLog()
			kp := path + "." + kind
			onlySet(c, kp, f, "path", "logFormat")
			if f.GetPath() == "" {
				c.errorf(kp+".path", "required (e.g. /dev/stdout)")
			}
			if lf := f.GetLogFormat(); lf != nil && lf.GetText() == "" && lf.GetLabels() == nil {
				c.errorf(kp+".logFormat", "set text or labels")
			}
		}
	}
	dp := m.GetDefaultProviders()
	for i, n := range dp.GetTracing() {
		checkProviderRef(c, m, fmt.Sprintf("defaultProviders.tracing[%d]", i), n, true)
	}
	for i, n := range dp.GetAccessLogging() {
		checkProviderRef(c, m, fmt.Sprintf("defaultProviders.accessLogging[%d]", i), n, false)
	}
	if len(dp.GetTracing()) > 1 {
		c.errorf("defaultProviders.tracing", "only one tracing provider is supported (as in Istio), got %d", len(dp.GetTracing()))
	}
	if s := m.GetDefaultConfig().GetTracing().GetSampling(); s < 0 || s > 100 {
		c.errorf("defaultConfig.tracing.sampling", "must be between 0 and 100, got %v", s)
	}
}

func validateProviderService(c *checker, path, service string, port uint32) {
	if service == "" {
		c.errorf(path+".service", "required: the collector's host, e.g. otel-collector.observability.svc.cluster.local")
	} else if !isHostname(service) {
		c.errorf(path+".service", "%q is not a host name", service)
	}
	if !validPort(port) {
		c.errorf(path+".port", "must be between 1 and 65535, got %d", port)
	}
}

// checkProviderRef reports a reference to a provider the mesh does not define, or of a kind that
// does not serve the purpose (tracing or access logging).
func checkProviderRef(c *checker, m *meshv1alpha1.MeshConfig, path, name string, tracing bool) {
	if reason := providerProblem(m, name, tracing); reason != "" {
		c.errorf(path, "%s", reason)
	}
}

func providerProblem(m *meshv1alpha1.MeshConfig, name string, tracing bool) string {
	if !tracing && name == builtinEnvoyProvider {
		return ""
	}
	for _, p := range m.GetExtensionProviders() {
		if p.GetName() != name {
			continue
		}
		kind := providerKind(p)
		switch {
		case tracing && (kind == providerKindOpenTelemetry || kind == providerKindZipkin):
			return ""
		case !tracing && kind == providerKindFileLog:
			return ""
		case tracing:
			return fmt.Sprintf("provider %q is a %s provider; Trellis traces with opentelemetry and zipkin providers", name, kind)
		default:
			return fmt.Sprintf("provider %q is a %s provider; Trellis logs with envoyFileAccessLog providers and the built-in %q", name, kind, builtinEnvoyProvider)
		}
	}
	return fmt.Sprintf("provider %q is not defined in the mesh config's extensionProviders", name)
}

// telemetryProviderRefs checks that every provider a Telemetry names is defined in the mesh config
// and serves its purpose.
func telemetryProviderRefs(mesh *meshv1alpha1.MeshConfig, docs []*document) []*ValidationError {
	var errs []*ValidationError
	for _, d := range docs {
		t, ok := d.spec.(*telemetry.Telemetry)
		if !ok {
			continue
		}
		var c checker
		for i, tr := range t.GetTracing() {
			for j, r := range tr.GetProviders() {
				checkProviderRef(&c, mesh, fmt.Sprintf("spec.tracing[%d].providers[%d].name", i, j), r.GetName(), true)
			}
		}
		for i, al := range t.GetAccessLogging() {
			for j, r := range al.GetProviders() {
				checkProviderRef(&c, mesh, fmt.Sprintf("spec.accessLogging[%d].providers[%d].name", i, j), r.GetName(), false)
			}
		}
		for _, e := range c.errs {
			errs = append(errs, d.errorAt(e.path, d.lineOf(e.path), e.reason))
		}
	}
	return errs
}
