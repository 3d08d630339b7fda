package translate

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	rawbufferv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/raw_buffer/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"
	security "istio.io/api/security/v1beta1"

	"github.com/trellis-mesh/trellis/internal/model"
)

// Mesh mutual TLS (SECURITY_CONTRACT.md, "Wire format of mesh mTLS"):
// PeerAuthentication decides what a sidecar's inbound listeners accept;
// auto-mTLS and DestinationRule tls decide what its outbound clusters send.
// Certificates are never in the config: TLS contexts name the SDS secrets
// "default" (the workload's chain and key) and "ROOTCA" (the mesh root),
// which the proxy's own identity agent serves.

const (
	tlsInspectorName    = "envoy.filters.listener.tls_inspector"
	tlsSocketName       = "envoy.transport_sockets.tls"
	rawBufferSocketName = "envoy.transport_sockets.raw_buffer"

	// Istio's SDS secret names and the cluster its agent is reached by.
	sdsWorkloadCert = "default"
	sdsRootCA       = "ROOTCA"
	sdsCluster      = "sds-grpc"

	// Endpoint metadata auto-mTLS selects on, as Istio writes it.
	transportSocketMatchKey = "envoy.transport_socket_match"
	tlsModeKey              = "tlsMode"
	tlsModeIstio            = "istio"

	// systemCABundle is what SIMPLE and MUTUAL verify a server against when
	// the DestinationRule names no caCertificates: the system trust store,
	// as Istio's proxies do (VERIFY_CERTIFICATE_AT_CLIENT), at the path
	// Istio's agent looks first.
	systemCABundle = "/etc/ssl/certs/ca-certificates.crt"
)

// Listener filter chain transport protocols the tls_inspector reports.
const (
	transportTLS = "tls"
	transportRaw = "raw_buffer"
)

var (
	// alpnInMesh is what a client proxy offers a peer sidecar (Istio's
	// ALPNInMeshWithMxc); alpnInbound is what the sidecar's server side offers.
	alpnInMesh  = []string{"istio-peer-exchange", "istio"}
	alpnInbound = []string{"h2", "http/1.1"}
)

// peerAuthn is the PeerAuthentication in effect for one workload, after
// Istio's precedence: the workload's selector policy over its namespace's
// over the mesh-wide one (root namespace), UNSET inheriting the level above,
// PERMISSIVE when nothing says otherwise.
type peerAuthn struct {
	mode  security.PeerAuthentication_MutualTLS_Mode
	ports map[uint32]*security.PeerAuthentication_MutualTLS // workload policy's portLevelMtls
}

// peerAuthnFor resolves the policy for a workload in ns with labels. Config
// validation refuses competing policies at one level; if several selector
// policies match one workload, the first by name wins (Istio: the oldest).
func peerAuthnFor(snap *model.Snapshot, ns string, labels map[string]string) peerAuthn {
	root := snap.Config.Mesh.GetRootNamespace()
	var meshWide, nsWide, workload *model.PeerAuthentication
	for _, pa := range snap.Config.PeerAuthentications {
		sel := pa.Spec.GetSelector().GetMatchLabels()
		switch {
		case pa.Namespace == ns && len(sel) > 0:
			if workload == nil && model.LabelsMatch(sel, labels) {
				workload = pa
			}
		case pa.Namespace == ns && nsWide == nil:
			nsWide = pa
		case pa.Namespace == root && len(sel) == 0 && meshWide == nil:
			meshWide = pa
		}
	}
	out := peerAuthn{mode: security.PeerAuthentication_MutualTLS_PERMISSIVE}
	for _, pa := range []*model.PeerAuthentication{meshWide, nsWide, workload} {
		if pa == nil {
			continue
		}
		if m := pa.Spec.GetMtls().GetMode(); m != security.PeerAuthentication_MutualTLS_UNSET {
			out.mode = m
		}
	}
	if workload != nil {
		out.ports = workload.Spec.GetPortLevelMtls()
	}
	return out
}

// portMode is the mode on one workload port: portLevelMtls over the
// workload's, UNSET inheriting.
func (p peerAuthn) portMode(port uint32) security.PeerAuthentication_MutualTLS_Mode {
	if m := p.ports[port].GetMode(); m != security.PeerAuthentication_MutualTLS_UNSET {
		return m
	}
	return p.mode
}

// secureInboundChains turns the plaintext filter chain for one inbound port
// into the chains its PeerAuthentication mode asks for. inspect reports
// whether the listener needs the tls_inspector to tell the chains apart.
func (e *env) secureInboundChains(plain *listenerv3.FilterChain, port uint32) (chains []*listenerv3.FilterChain, inspect bool, err error) {
	mode := peerAuthnFor(e.snap, e.proxy.Namespace, e.labels).portMode(port)
	if mode == security.PeerAuthentication_MutualTLS_DISABLE {
		return []*listenerv3.FilterChain{plain}, false, nil
	}
	ts, err := downstreamMTLSSocket()
	if err != nil {
		return nil, false, fmt.Errorf("port %d: %w", port, err)
	}
	secure := proto.Clone(plain).(*listenerv3.FilterChain)
	secure.TransportSocket = ts
	if secure.Name != "" {
		secure.Name += "_mtls" // chain names are unique within a listener
	}
	withTransport(secure, transportTLS)
	if mode == security.PeerAuthentication_MutualTLS_STRICT {
		// No plaintext chain: a connection that is not TLS matches no
		// chain and is closed.
		return []*listenerv3.FilterChain{secure}, true, nil
	}
	withTransport(plain, transportRaw) // PERMISSIVE
	return []*listenerv3.FilterChain{secure, plain}, true, nil
}

func withTransport(fc *listenerv3.FilterChain, transport string) {
	if fc.FilterChainMatch == nil {
		fc.FilterChainMatch = &listenerv3.FilterChainMatch{}
	}
	fc.FilterChainMatch.TransportProtocol = transport
}

// addTLSInspector puts the tls_inspector on l once.
func addTLSInspector(l *listenerv3.Listener) error {
	for _, f := range l.GetListenerFilters() {
		if f.GetName() == tlsInspectorName {
			return nil
		}
	}
	cfg, err := anypb.New(&tlsinspectorv3.TlsInspector{})
	if err != nil {
		return fmt.Errorf("%s: %w", tlsInspectorName, err)
	}
	l.ListenerFilters = append(l.ListenerFilters, &listenerv3.ListenerFilter{
		Name:       tlsInspectorName,
		ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: cfg},
	})
	return nil
}

// secureInboundListener applies the port's mode to a local-mode inbound
// listener, which has the one plaintext chain httpListener built.
func (e *env) secureInboundListener(l *listenerv3.Listener, port uint32) error {
	chains, inspect, err := e.secureInboundChains(l.FilterChains[0], port)
	if err != nil {
		return fmt.Errorf("listener %s: %w", l.GetName(), err)
	}
	l.FilterChains = chains
	if inspect {
		return addTLSInspector(l)
	}
	return nil
}

// downstreamMTLSSocket is the server side of mesh mTLS: the workload's
// certificate, a client certificate required and verified against the mesh
// root, any SPIFFE identity accepted (authorization is RBAC's job).
func downstreamMTLSSocket() (*corev3.TransportSocket, error) {
	return tlsSocket(&tlsv3.DownstreamTlsContext{
		RequireClientCertificate: wrapperspb.Bool(true),
		CommonTlsContext: meshTLSContext([]*tlsv3.SubjectAltNameMatcher{{
			SanType: tlsv3.SubjectAltNameMatcher_URI,
			Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "spiffe://"}},
		}}, alpnInbound),
	})
}

// meshTLSContext names the SDS secrets of the workload's identity, checks
// the peer against the mesh root and sans.
func meshTLSContext(sans []*tlsv3.SubjectAltNameMatcher, alpn []string) *tlsv3.CommonTlsContext {
	return &tlsv3.CommonTlsContext{
		TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{sdsSecret(sdsWorkloadCert)},
		ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{
			CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
				DefaultValidationContext:         &tlsv3.CertificateValidationContext{MatchTypedSubjectAltNames: sans},
				ValidationContextSdsSecretConfig: sdsSecret(sdsRootCA),
			},
		},
		AlpnProtocols: slices.Clone(alpn),
	}
}

// sdsSecret references a secret the proxy's agent serves, with exactly the
// sds_config Istio sends.
func sdsSecret(name string) *tlsv3.SdsSecretConfig {
	return &tlsv3.SdsSecretConfig{
		Name: name,
		SdsConfig: &corev3.ConfigSource{
			ConfigSourceSpecifier: &corev3.ConfigSource_ApiConfigSource{ApiConfigSource: &corev3.ApiConfigSource{
				ApiType: corev3.ApiConfigSource_GRPC,
				GrpcServices: []*corev3.GrpcService{{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{
					EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: sdsCluster},
				}}},
				TransportApiVersion: corev3.ApiVersion_V3,
			}},
			ResourceApiVersion: corev3.ApiVersion_V3,
		},
	}
}

func tlsSocket(ctx proto.Message) (*corev3.TransportSocket, error) {
	cfg, err := anypb.New(ctx)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", tlsSocketName, err)
	}
	return &corev3.TransportSocket{Name: tlsSocketName, ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: cfg}}, nil
}

func rawBufferSocket() (*corev3.TransportSocket, error) {
	cfg, err := anypb.New(&rawbufferv3.RawBuffer{})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", rawBufferSocketName, err)
	}
	return &corev3.TransportSocket{Name: rawBufferSocketName, ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: cfg}}, nil
}

// applyClientTLS sets what an outbound cluster sends, with Istio's
// precedence (cluster_tls.go, buildAutoMtlsSettings): the DestinationRule's
// tls (already merged from subset and port level) wins; without one,
// auto-mTLS sends mTLS to endpoints whose workload has a sidecar and
// plaintext to the others, unless the mesh turns it off, the service is
// outside the mesh, or its namespace's policy is DISABLE.
func (e *env) applyClientTLS(c *clusterv3.Cluster, svc *model.Service, port *model.Port, subset string) error {
	tls := e.clientTLS(svc.Hostname, subset, port.Number)
	sni := "outbound_." + strconv.FormatUint(uint64(port.Number), 10) + "_." + subset + "_." + svc.Hostname
	var err error
	switch {
	case tls == nil:
		if !e.autoMTLS() || svc.Location == networking.ServiceEntry_MESH_EXTERNAL || e.serviceMTLSDisabled(svc) {
			return nil
		}
		c.TransportSocketMatches, err = e.autoMTLSMatches(svc, sni)
	case tls.GetMode() == networking.ClientTLSSettings_DISABLE: // DISABLE is the zero value
		return nil
	case tls.GetMode() == networking.ClientTLSSettings_ISTIO_MUTUAL:
		c.TransportSocket, err = e.istioMutualSocket(svc, tls, sni)
	default: // SIMPLE, MUTUAL
		c.TransportSocket, err = originationSocket(svc, port, tls)
	}
	if err != nil {
		return fmt.Errorf("cluster %s: tls: %w", c.GetName(), err)
	}
	return nil
}

// clientTLS is the DestinationRule tls for a cluster, by Istio's
// MergeTrafficPolicy: the rule's top level with its port-level entry
// applied, then the subset's tls, then the subset's port-level entry. nil
// when none is set.
func (e *env) clientTLS(host, subset string, port uint32) *networking.ClientTLSSettings {
	dr := e.destinationRule(host)
	if dr == nil {
		return nil
	}
	top := dr.Spec.GetTrafficPolicy()
	tls := top.GetTls()
	if pl := portPolicy(top, port); pl != nil {
		tls = pl.GetTls() // port-level settings replace, never inherit (Istio)
	}
	for _, ss := range dr.Spec.GetSubsets() {
		if ss.GetName() != subset || subset == "" {
			continue
		}
		if t := ss.GetTrafficPolicy().GetTls(); t != nil {
			tls = t
		}
		if pl := portPolicy(ss.GetTrafficPolicy(), port); pl != nil {
			tls = pl.GetTls()
		}
	}
	return tls
}

// autoMTLS is MeshConfig enableAutoMtls, true unless set false (Istio's default).
func (e *env) autoMTLS() bool {
	v := e.snap.Config.Mesh.GetEnableAutoMtls()
	return v == nil || v.GetValue()
}

// serviceMTLSDisabled is Istio's best-effort guess of a service's mode from
// the mesh-wide and namespace-wide policies only (workload and port level
// are handled per endpoint, by the endpoint metadata).
func (e *env) serviceMTLSDisabled(svc *model.Service) bool {
	// No labels: only policies without a selector can match.
	return peerAuthnFor(e.snap, svc.Namespace, nil).mode == security.PeerAuthentication_MutualTLS_DISABLE
}

func (e *env) autoMTLSMatches(svc *model.Service, sni string) ([]*clusterv3.Cluster_TransportSocketMatch, error) {
	mtls, err := e.istioMutualSocket(svc, nil, sni)
	if err != nil {
		return nil, err
	}
	plain, err := rawBufferSocket()
	if err != nil {
		return nil, err
	}
	return []*clusterv3.Cluster_TransportSocketMatch{
		{
			Name:            "tlsMode-istio",
			Match:           &structpb.Struct{Fields: map[string]*structpb.Value{tlsModeKey: structpb.NewStringValue(tlsModeIstio)}},
			TransportSocket: mtls,
		},
		{Name: "tlsMode-disabled", Match: &structpb.Struct{}, TransportSocket: plain},
	}, nil
}

// istioMutualSocket is the client side of mesh mTLS. The peer must present
// the identity of one of the service's workloads, unless the
// DestinationRule lists subjectAltNames itself; its sni replaces Istio's
// "outbound_.<port>_.<subset>_.<host>".
func (e *env) istioMutualSocket(svc *model.Service, tls *networking.ClientTLSSettings, sni string) (*corev3.TransportSocket, error) {
	var sans []*tlsv3.SubjectAltNameMatcher
	if names := tls.GetSubjectAltNames(); len(names) > 0 {
		sans = sanMatchers(names)
	} else {
		for _, id := range e.serviceIdentities(svc) {
			sans = append(sans, sanMatcher(tlsv3.SubjectAltNameMatcher_URI, id))
		}
	}
	if tls.GetSni() != "" {
		sni = tls.GetSni()
	}
	return tlsSocket(&tlsv3.UpstreamTlsContext{Sni: sni, CommonTlsContext: meshTLSContext(sans, alpnInMesh)})
}

// serviceIdentities are the SPIFFE IDs of the service's sidecar workloads,
// spiffe://<trust domain>/ns/<namespace>/sa/<service account>, and the
// ServiceEntry's own subjectAltNames, sorted and without repeats.
func (e *env) serviceIdentities(svc *model.Service) []string {
	td := e.snap.Config.Mesh.GetTrustDomain()
	if td == "" {
		td = "cluster.local"
	}
	var ids []string
	for _, ep := range svc.Endpoints {
		if !hasSidecar(ep) {
			continue
		}
		ns, sa := svc.Identity(ep)
		ids = append(ids, "spiffe://"+td+"/ns/"+ns+"/sa/"+sa)
	}
	if svc.Entry != nil {
		ids = append(ids, svc.Entry.Spec.GetSubjectAltNames()...)
	}
	slices.Sort(ids)
	return slices.Compact(ids)
}

// sanMatchers matches each name exactly, as a URI SAN when it has a
// scheme, an IP SAN when it is an address, a DNS SAN otherwise.
func sanMatchers(names []string) []*tlsv3.SubjectAltNameMatcher {
	out := make([]*tlsv3.SubjectAltNameMatcher, 0, len(names))
	for _, n := range names {
		kind := tlsv3.SubjectAltNameMatcher_DNS
		switch {
		case strings.Contains(n, "://"):
			kind = tlsv3.SubjectAltNameMatcher_URI
		case net.ParseIP(n) != nil:
			kind = tlsv3.SubjectAltNameMatcher_IP_ADDRESS
		}
		out = append(out, sanMatcher(kind, n))
	}
	return out
}

func sanMatcher(kind tlsv3.SubjectAltNameMatcher_SanType, exact string) *tlsv3.SubjectAltNameMatcher {
	return &tlsv3.SubjectAltNameMatcher{
		SanType: kind,
		Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: exact}},
	}
}

// originationSocket is DestinationRule SIMPLE or MUTUAL TLS: certificates
// from the files the rule names, read by the proxy.
func originationSocket(svc *model.Service, port *model.Port, tls *networking.ClientTLSSettings) (*corev3.TransportSocket, error) {
	common := &tlsv3.CommonTlsContext{}
	if tls.GetMode() == networking.ClientTLSSettings_MUTUAL {
		common.TlsCertificates = []*tlsv3.TlsCertificate{{
			CertificateChain: fileSource(tls.GetClientCertificate()),
			PrivateKey:       fileSource(tls.GetPrivateKey()),
		}}
	}
	if !tls.GetInsecureSkipVerify().GetValue() {
		ca := tls.GetCaCertificates()
		if ca == "" {
			ca = systemCABundle
		}
		common.ValidationContextType = &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa:                 fileSource(ca),
			MatchTypedSubjectAltNames: sanMatchers(tls.GetSubjectAltNames()),
		}}
	}
	switch port.Protocol {
	case "HTTP2", "GRPC", "GRPC-WEB":
		common.AlpnProtocols = []string{"h2"}
	}
	sni := tls.GetSni()
	if sni == "" && !strings.HasPrefix(svc.Hostname, "*") {
		// Istio sets it per request from the Host header (ENABLE_AUTO_SNI);
		// a ServiceEntry host is the name that header carries.
		sni = svc.Hostname
	}
	return tlsSocket(&tlsv3.UpstreamTlsContext{Sni: sni, CommonTlsContext: common})
}

func fileSource(path string) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: path}}
}

// hasSidecar: model.Endpoint.HasSidecar (shared with model.EndpointDelta).
func hasSidecar(ep *model.Endpoint) bool { return ep.HasSidecar() }

// addTLSModeMetadata marks an endpoint for the cluster's tlsMode-istio
// transport socket match when its workload has a sidecar that accepts mTLS
// on the port: like Istio's EDS, not when the workload's own
// PeerAuthentication (workload or port level) is DISABLE there.
func addTLSModeMetadata(lb *endpointv3.LbEndpoint, snap *model.Snapshot, ep *model.Endpoint, port uint32) {
	if !hasSidecar(ep) {
		return
	}
	ns := ""
	if ep.Workload != nil {
		ns = ep.Workload.Namespace
	}
	if ns != "" && peerAuthnFor(snap, ns, ep.Labels).portMode(port) == security.PeerAuthentication_MutualTLS_DISABLE {
		return
	}
	if lb.Metadata == nil {
		lb.Metadata = &corev3.Metadata{}
	}
	if lb.Metadata.FilterMetadata == nil {
		lb.Metadata.FilterMetadata = map[string]*structpb.Struct{}
	}
	lb.Metadata.FilterMetadata[transportSocketMatchKey] = &structpb.Struct{Fields: map[string]*structpb.Value{
		tlsModeKey: structpb.NewStringValue(tlsModeIstio),
	}}
}
