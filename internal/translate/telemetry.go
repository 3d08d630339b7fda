package translate

import (
	"fmt"
	"slices"
	"strings"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	filev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tracingtypev3 "github.com/envoyproxy/go-control-plane/envoy/type/tracing/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	telemetry "istio.io/api/telemetry/v1alpha1"
)

// Istio's defaults for telemetry.
const (
	// defaultSampling is Istio's trace sampling when neither Telemetry nor
	// defaultConfig.tracing.sampling says (percent).
	defaultSampling = 1.0
	// defaultAccessLogPath is the built-in "envoy" provider's file without accessLogFile.
	defaultAccessLogPath = "/dev/stdout"
	defaultZipkinPath    = "/api/v2/spans"

	fileAccessLogName = "envoy.access_loggers.file"
	otelTracerName    = "envoy.tracers.opentelemetry"
	zipkinTracerName  = "envoy.tracers.zipkin"
)

// istioTextFormat is Istio's default access log format (EnvoyTextLogFormat).
const istioTextFormat = `[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" ` +
	`%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% ` +
	`"%UPSTREAM_TRANSPORT_FAILURE_REASON%" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% ` +
	`%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" "%REQ(X-REQUEST-ID)%" ` +
	`"%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER_RAW% %UPSTREAM_LOCAL_ADDRESS% ` +
	`%DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%` + "\n"

// istioJSONFormat is Istio's default JSON access log (accessLogEncoding: JSON).
var istioJSONFormat = map[string]any{
	"start_time":                        "%START_TIME%",
	"route_name":                        "%ROUTE_NAME%",
	"method":                            "%REQ(:METHOD)%",
	"path":                              "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
	"protocol":                          "%PROTOCOL%",
	"response_code":                     "%RESPONSE_CODE%",
	"response_flags":                    "%RESPONSE_FLAGS%",
	"response_code_details":             "%RESPONSE_CODE_DETAILS%",
	"connection_termination_details":    "%CONNECTION_TERMINATION_DETAILS%",
	"bytes_received":                    "%BYTES_RECEIVED%",
	"bytes_sent":                        "%BYTES_SENT%",
	"duration":                          "%DURATION%",
	"upstream_service_time":             "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
	"x_forwarded_for":                   "%REQ(X-FORWARDED-FOR)%",
	"user_agent":                        "%REQ(USER-AGENT)%",
	"request_id":                        "%REQ(X-REQUEST-ID)%",
	"authority":                         "%REQ(:AUTHORITY)%",
	"upstream_host":                     "%UPSTREAM_HOST%",
	"upstream_cluster":                  "%UPSTREAM_CLUSTER_RAW%",
	"upstream_local_address":            "%UPSTREAM_LOCAL_ADDRESS%",
	"downstream_local_address":          "%DOWNSTREAM_LOCAL_ADDRESS%",
	"downstream_remote_address":         "%DOWNSTREAM_REMOTE_ADDRESS%",
	"requested_server_name":             "%REQUESTED_SERVER_NAME%",
	"upstream_transport_failure_reason": "%UPSTREAM_TRANSPORT_FAILURE_REASON%",
}

// telemetryConfig is what applies to one proxy after Istio's precedence: mesh defaults, then the
// root namespace's Telemetry, the namespace's, the workload's.
type telemetryConfig struct {
	tracingProvider string // "" traces nothing
	sampling        float64
	customTags      map[string]*telemetry.Tracing_CustomTag
	logProviders    []string // nil logs nothing
}

func (e *env) resolveTelemetry() telemetryConfig {
	mesh := e.snap.Config.Mesh
	var out telemetryConfig
	if p := mesh.GetDefaultProviders().GetTracing(); len(p) > 0 {
		out.tracingProvider = p[0]
	}
	out.sampling = defaultSampling
	if s := mesh.GetDefaultConfig().GetTracing().GetSampling(); s != 0 {
		out.sampling = s
	}
	if p := mesh.GetDefaultProviders().GetAccessLogging(); len(p) > 0 {
		out.logProviders = p
	} else if mesh.GetAccessLogFile() != "" {
		out.logProviders = []string{builtinEnvoyProvider}
	}
	disabled := false
	for _, t := range e.snap.TelemetriesFor(e.proxy.Namespace, e.labels) {
		for _, tr := range t.Spec.GetTracing() {
			if len(tr.GetProviders()) > 0 {
				out.tracingProvider = tr.GetProviders()[0].GetName()
			}
			if s := tr.GetRandomSamplingPercentage(); s != nil {
				out.sampling = s.GetValue()
			}
			if d := tr.GetDisableSpanReporting(); d != nil {
				disabled = d.GetValue()
			}
			for k, v := range tr.GetCustomTags() {
				if out.customTags == nil {
					out.customTags = map[string]*telemetry.Tracing_CustomTag{}
				}
				out.customTags[k] = v
			}
		}
		for _, al := range t.Spec.GetAccessLogging() {
			if len(al.GetProviders()) > 0 {
				out.logProviders = providerNames(al.GetProviders())
			}
			if d := al.GetDisabled(); d != nil && d.GetValue() {
				out.logProviders = nil
			}
		}
	}
	if disabled {
		out.tracingProvider = ""
	}
	return out
}

const builtinEnvoyProvider = "envoy"

func providerNames(refs []*telemetry.ProviderRef) []string {
	out := make([]string, 0, len(refs))
	for _, r := range refs {
		out = append(out, r.GetName())
	}
	return out
}

// applyTelemetry adds tracing and access logs, as MeshConfig and the Telemetry API ask, to every
// HTTP connection manager of the proxy's listeners.
func (e *env) applyTelemetry(res *Resources) error {
	tc := e.resolveTelemetry()
	if tc.tracingProvider == "" && len(tc.logProviders) == 0 {
		return nil
	}
	clusters := map[string]bool{}
	for _, c := range res.Clusters {
		clusters[c.GetName()] = true
	}
	var tracing *hcmv3.HttpConnectionManager_Tracing
	if tc.tracingProvider != "" {
		var err error
		if tracing, err = e.tracing(tc, clusters); err != nil {
			return err
		}
	}
	var logs []*accesslogv3.AccessLog
	for _, name := range tc.logProviders {
		l, err := e.accessLog(name)
		if err != nil {
			return err
		}
		logs = append(logs, l)
	}
	for _, l := range res.Listeners {
		chains := l.GetFilterChains()
		if dc := l.GetDefaultFilterChain(); dc != nil {
			chains = append(slices.Clip(chains), dc)
		}
		for _, fc := range chains {
			if err := withHCM(fc, func(h *hcmv3.HttpConnectionManager) {
				h.Tracing = tracing
				h.AccessLog = append(h.AccessLog, logs...)
			}); err != nil {
				return fmt.Errorf("listener %s: %w", l.GetName(), err)
			}
			if len(logs) > 0 { // TCP connections are logged as they close (tcp_proxy's access_log)
				if err := withTCPProxy(fc, func(t *tcpproxyv3.TcpProxy) { t.AccessLog = append(t.AccessLog, logs...) }); err != nil {
					return fmt.Errorf("listener %s: %w", l.GetName(), err)
				}
			}
		}
	}
	return nil
}

// withTCPProxy edits a filter chain's tcp_proxy, if it has one.
func withTCPProxy(fc *listenerv3.FilterChain, edit func(*tcpproxyv3.TcpProxy)) error {
	for _, f := range fc.GetFilters() {
		if f.GetName() != tcpProxyFilterName {
			continue
		}
		var t tcpproxyv3.TcpProxy
		if err := f.GetTypedConfig().UnmarshalTo(&t); err != nil {
			return err
		}
		edit(&t)
		a, err := anypb.New(&t)
		if err != nil {
			return err
		}
		f.ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: a}
	}
	return nil
}

// withHCM edits a filter chain's HTTP connection manager, if it has one.
func withHCM(fc *listenerv3.FilterChain, edit func(*hcmv3.HttpConnectionManager)) error {
	for _, f := range fc.GetFilters() {
		if f.GetName() != hcmFilterName {
			continue
		}
		var h hcmv3.HttpConnectionManager
		if err := f.GetTypedConfig().UnmarshalTo(&h); err != nil {
			return err
		}
		edit(&h)
		a, err := anypb.New(&h)
		if err != nil {
			return err
		}
		f.ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: a}
	}
	return nil
}

func (e *env) extensionProvider(name string) *meshv1alpha1.MeshConfig_ExtensionProvider {
	for _, p := range e.snap.Config.Mesh.GetExtensionProviders() {
		if p.GetName() == name {
			return p
		}
	}
	return nil
}

// collectorCluster is the outbound cluster of a provider's service:port, which must exist.
func collectorCluster(provider, service string, port uint32, clusters map[string]bool) (string, error) {
	name := fmt.Sprintf("outbound|%d||%s", port, service)
	if !clusters[name] {
		return "", fmt.Errorf("extension provider %q: no cluster %s: declare %s port %d (a ServiceEntry or a Kubernetes Service)", provider, name, service, port)
	}
	return name, nil
}

func (e *env) tracing(tc telemetryConfig, clusters map[string]bool) (*hcmv3.HttpConnectionManager_Tracing, error) {
	p := e.extensionProvider(tc.tracingProvider)
	if p == nil {
		return nil, fmt.Errorf("tracing provider %q is not defined in the mesh config", tc.tracingProvider)
	}
	mesh := e.snap.Config.Mesh
	out := &hcmv3.HttpConnectionManager_Tracing{
		RandomSampling:  &typev3.Percent{Value: tc.sampling},
		ClientSampling:  &typev3.Percent{Value: 100},
		OverallSampling: &typev3.Percent{Value: 100},
	}
	if n := mesh.GetDefaultConfig().GetTracing().GetMaxPathTagLength(); n > 0 {
		out.MaxPathTagLength = wrapperspb.UInt32(n)
	}
	service, revision := canonicalService(e.labels, e.proxy.Name), canonicalRevision(e.labels)
	tags := map[string]string{
		"istio.canonical_service":  service,
		"istio.canonical_revision": revision,
		"istio.namespace":          e.proxy.Namespace,
		"istio.mesh_id":            meshID(mesh),
	}
	for _, k := range sortedKeys(tags) {
		out.CustomTags = append(out.CustomTags, &tracingtypev3.CustomTag{Tag: k,
			Type: &tracingtypev3.CustomTag_Literal_{Literal: &tracingtypev3.CustomTag_Literal{Value: tags[k]}}})
	}
	for _, k := range sortedKeys(tc.customTags) {
		out.CustomTags = append(out.CustomTags, customTag(k, tc.customTags[k]))
	}
	var cfg proto.Message
	var tracer string
	switch {
	case p.GetOpentelemetry() != nil:
		o := p.GetOpentelemetry()
		cl, err := collectorCluster(p.GetName(), o.GetService(), o.GetPort(), clusters)
		if err != nil {
			return nil, err
		}
		tracer = otelTracerName
		cfg = &tracev3.OpenTelemetryConfig{
			ServiceName: service + "." + e.proxy.Namespace,
			GrpcService: &corev3.GrpcService{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{
				ClusterName: cl, Authority: o.GetService(),
			}}},
		}
	case p.GetZipkin() != nil:
		z := p.GetZipkin()
		cl, err := collectorCluster(p.GetName(), z.GetService(), z.GetPort(), clusters)
		if err != nil {
			return nil, err
		}
		path := z.GetPath()
		if path == "" {
			path = defaultZipkinPath
		}
		tracer = zipkinTracerName
		cfg = &tracev3.ZipkinConfig{
			CollectorCluster:         cl,
			CollectorEndpoint:        path,
			CollectorEndpointVersion: tracev3.ZipkinConfig_HTTP_JSON,
			CollectorHostname:        z.GetService(),
			TraceId_128Bit:           !z.GetEnable_64BitTraceId(),
			SharedSpanContext:        wrapperspb.Bool(false), // as Istio sets it
		}
	default:
		return nil, fmt.Errorf("tracing provider %q: only opentelemetry and zipkin providers are supported", p.GetName())
	}
	a, err := anypb.New(cfg)
	if err != nil {
		return nil, err
	}
	out.Provider = &tracev3.Tracing_Http{Name: tracer, ConfigType: &tracev3.Tracing_Http_TypedConfig{TypedConfig: a}}
	return out, nil
}

func customTag(name string, t *telemetry.Tracing_CustomTag) *tracingtypev3.CustomTag {
	out := &tracingtypev3.CustomTag{Tag: name}
	switch {
	case t.GetLiteral() != nil:
		out.Type = &tracingtypev3.CustomTag_Literal_{Literal: &tracingtypev3.CustomTag_Literal{Value: t.GetLiteral().GetValue()}}
	case t.GetEnvironment() != nil:
		out.Type = &tracingtypev3.CustomTag_Environment_{Environment: &tracingtypev3.CustomTag_Environment{
			Name: t.GetEnvironment().GetName(), DefaultValue: t.GetEnvironment().GetDefaultValue()}}
	case t.GetHeader() != nil:
		out.Type = &tracingtypev3.CustomTag_RequestHeader{RequestHeader: &tracingtypev3.CustomTag_Header{
			Name: t.GetHeader().GetName(), DefaultValue: t.GetHeader().GetDefaultValue()}}
	}
	return out
}

// accessLog is the file access log of a provider: the built-in "envoy" one, or an
// envoyFileAccessLog extension provider.
func (e *env) accessLog(name string) (*accesslogv3.AccessLog, error) {
	mesh := e.snap.Config.Mesh
	fl := &filev3.FileAccessLog{}
	if name == builtinEnvoyProvider {
		fl.Path = mesh.GetAccessLogFile()
		if fl.Path == "" {
			fl.Path = defaultAccessLogPath
		}
		format := mesh.GetAccessLogFormat()
		if mesh.GetAccessLogEncoding() == meshv1alpha1.MeshConfig_JSON {
			labels := istioJSONFormat
			if format != "" {
				// Istio reads a custom JSON accessLogFormat as the label map.
				s := &structpb.Struct{}
				if err := s.UnmarshalJSON([]byte(format)); err != nil {
					return nil, fmt.Errorf("mesh config accessLogFormat: with accessLogEncoding JSON it must be a JSON object: %w", err)
				}
				labels = s.AsMap()
			}
			if err := jsonLogFormat(fl, labels); err != nil {
				return nil, err
			}
		} else {
			if format == "" {
				format = istioTextFormat
			} else if !strings.HasSuffix(format, "\n") {
				format += "\n"
			}
			textLogFormat(fl, format)
		}
	} else {
		p := e.extensionProvider(name)
		if p.GetEnvoyFileAccessLog() == nil {
			return nil, fmt.Errorf("access log provider %q: only envoyFileAccessLog providers and %q are supported", name, builtinEnvoyProvider)
		}
		f := p.GetEnvoyFileAccessLog()
		fl.Path = f.GetPath()
		switch lf := f.GetLogFormat(); {
		case lf.GetLabels() != nil:
			if err := jsonLogFormat(fl, lf.GetLabels().AsMap()); err != nil {
				return nil, err
			}
		case lf.GetText() != "":
			text := lf.GetText()
			if !strings.HasSuffix(text, "\n") {
				text += "\n"
			}
			textLogFormat(fl, text)
		default:
			textLogFormat(fl, istioTextFormat)
		}
	}
	a, err := anypb.New(fl)
	if err != nil {
		return nil, err
	}
	return &accesslogv3.AccessLog{Name: fileAccessLogName, ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: a}}, nil
}

func textLogFormat(fl *filev3.FileAccessLog, text string) {
	fl.AccessLogFormat = &filev3.FileAccessLog_LogFormat{LogFormat: &corev3.SubstitutionFormatString{
		Format: &corev3.SubstitutionFormatString_TextFormatSource{TextFormatSource: &corev3.DataSource{
			Specifier: &corev3.DataSource_InlineString{InlineString: text},
		}},
	}}
}

func jsonLogFormat(fl *filev3.FileAccessLog, labels map[string]any) error {
	s, err := structpb.NewStruct(labels)
	if err != nil {
		return fmt.Errorf("access log labels: %w", err)
	}
	fl.AccessLogFormat = &filev3.FileAccessLog_LogFormat{LogFormat: &corev3.SubstitutionFormatString{
		Format: &corev3.SubstitutionFormatString_JsonFormat{JsonFormat: s},
	}}
	return nil
}

// canonicalService is Istio's canonical service of a workload: its canonical-name label, else
// app.kubernetes.io/name, else app, else the workload's name.
func canonicalService(labels map[string]string, name string) string {
	for _, k := range []string{"service.istio.io/canonical-name", "app.kubernetes.io/name", "app"} {
		if v := labels[k]; v != "" {
			return v
		}
	}
	return name
}

func canonicalRevision(labels map[string]string) string {
	for _, k := range []string{"service.istio.io/canonical-revision", "app.kubernetes.io/version", "version"} {
		if v := labels[k]; v != "" {
			return v
		}
	}
	return "latest"
}

func meshID(m *meshv1alpha1.MeshConfig) string {
	if id := m.GetDefaultConfig().GetMeshId(); id != "" {
		return id
	}
	return m.GetTrustDomain()
}
