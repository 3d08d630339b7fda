package translate

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/emptypb"
	security "istio.io/api/security/v1beta1"
)

// RequestAuthentication becomes Envoy's jwt_authn filter, one provider per jwtRule of every
// RequestAuthentication that applies to the workload (root namespace, namespace, selector: as
// for AuthorizationPolicy). As in Istio, a request without a token passes authentication (it
// simply has no request principal; an AuthorizationPolicy decides), one with a bad token gets 401.
//
// Where Istio differs: istiod fetches each jwksUri itself and inlines the keys (local_jwks), so
// proxies need no route to the issuer. Trellis's control plane does no I/O while translating, so
// the proxy fetches the key set (remote_jwks) through a cluster generated here, and caches it for
// jwksCacheDuration. Inline jwks are passed through as local_jwks.

const (
	// jwksCacheDuration is Istio's JWKS refresh interval (PILOT_JWT_PUB_KEY_REFRESH_INTERVAL).
	jwksCacheDuration = 20 * time.Minute
	// jwksFetchTimeout is Istio's default jwtRules[].timeout.
	jwksFetchTimeout = 5 * time.Second
	// systemRootsFile is where Debian-based images (Istio's proxyv2 and distroless among them)
	// keep the public roots; https key sets are verified against it.
	systemRootsFile = "/etc/ssl/certs/ca-certificates.crt"
)

// jwtResult is what authentication contributes: the filter (nil when no RequestAuthentication
// applies), the clusters its key sets are fetched through, and the issuers whose verified
// payloads authorization can read.
type jwtResult struct {
	filter   *hcmv3.HttpFilter
	clusters []*clusterv3.Cluster
	issuers  []string
}

func (e *env) jwtAuthn(existing map[string]bool) (jwtResult, error) {
	var res jwtResult
	cfg := &jwtv3.JwtAuthentication{Providers: map[string]*jwtv3.JwtProvider{}}
	var reqs []*jwtv3.JwtRequirement
	seenIssuer := map[string]bool{}
	added := map[string]bool{}
	for _, ra := range e.snap.Config.RequestAuthentications {
		if !e.selects(ra.Namespace, ra.Spec.GetSelector().GetMatchLabels()) {
			continue
		}
		for _, rule := range ra.Spec.GetJwtRules() {
			p, cluster, err := e.jwtProvider(rule, existing)
			if err != nil {
				return res, fmt.Errorf("%s (%s): jwtRules issuer %q: %w", ra.Key(), ra.Source, rule.GetIssuer(), err)
			}
			if cluster != nil && !added[cluster.Name] {
				added[cluster.Name] = true
				res.clusters = append(res.clusters, cluster)
			}
			name := providerName(rule.GetIssuer(), cfg.Providers)
			cfg.Providers[name] = p
			reqs = append(reqs, &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_ProviderName{ProviderName: name}})
			if !seenIssuer[rule.GetIssuer()] {
				seenIssuer[rule.GetIssuer()] = true
				res.issuers = append(res.issuers, rule.GetIssuer())
			}
		}
	}
	if len(reqs) == 0 {
		return res, nil
	}
	reqs = append(reqs, &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_AllowMissing{AllowMissing: &emptypb.Empty{}}})
	cfg.Rules = []*jwtv3.RequirementRule{{
		Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
		RequirementType: &jwtv3.RequirementRule_Requires{Requires: &jwtv3.JwtRequirement{
			RequiresType: &jwtv3.JwtRequirement_RequiresAny{RequiresAny: &jwtv3.JwtRequirementOrList{Requirements: reqs}},
		}},
	}}
	f, err := httpFilter(jwtAuthnFilterName, cfg)
	if err != nil {
		return res, err
	}
	res.filter = f
	return res, nil
}

// providerName names a provider by its issuer, as the contract asks; a second rule for the same
// issuer (from another RequestAuthentication) gets "#2", and so on. Both keep their payload under
// the issuer, so authorization reads whichever verified the token.
func providerName(issuer string, taken map[string]*jwtv3.JwtProvider) string {
	name := issuer
	for n := 2; taken[name] != nil; n++ {
		name = issuer + "#" + strconv.Itoa(n)
	}
	return name
}

// jwtProvider translates one jwtRule. It returns the cluster its remote key set is fetched
// through when that cluster has to be generated.
func (e *env) jwtProvider(r *security.JWTRule, existing map[string]bool) (*jwtv3.JwtProvider, *clusterv3.Cluster, error) {
	p := &jwtv3.JwtProvider{
		Issuer:               r.GetIssuer(),
		Audiences:            r.GetAudiences(),
		Forward:              r.GetForwardOriginalToken(),
		FromParams:           r.GetFromParams(),
		FromCookies:          r.GetFromCookies(),
		ForwardPayloadHeader: r.GetOutputPayloadToHeader(),
		PayloadInMetadata:    r.GetIssuer(),
	}
	for _, h := range r.GetFromHeaders() {
		p.FromHeaders = append(p.FromHeaders, &jwtv3.JwtHeader{Name: h.GetName(), ValuePrefix: h.GetPrefix()})
	}
	for _, ch := range r.GetOutputClaimToHeaders() {
		p.ClaimToHeaders = append(p.ClaimToHeaders, &jwtv3.JwtClaimToHeader{HeaderName: ch.GetHeader(), ClaimName: ch.GetClaim()})
	}
	if jwks := r.GetJwks(); jwks != "" {
		// Istio: inline jwks take precedence over jwksUri.
		p.JwksSourceSpecifier = &jwtv3.JwtProvider_LocalJwks{LocalJwks: &corev3.DataSource{
			Specifier: &corev3.DataSource_InlineString{InlineString: jwks},
		}}
		return p, nil, nil
	}
	timeout := jwksFetchTimeout
	if t := r.GetTimeout(); t != nil && t.AsDuration() > 0 {
		timeout = t.AsDuration()
	}
	clusterName, cluster, err := e.jwksCluster(r.GetJwksUri(), existing)
	if err != nil {
		return nil, nil, err
	}
	p.JwksSourceSpecifier = &jwtv3.JwtProvider_RemoteJwks{RemoteJwks: &jwtv3.RemoteJwks{
		HttpUri: &corev3.HttpUri{
			Uri:              r.GetJwksUri(),
			HttpUpstreamType: &corev3.HttpUri_Cluster{Cluster: clusterName},
			Timeout:          durationpb.New(timeout),
		},
		CacheDuration: durationpb.New(jwksCacheDuration),
	}}
	return p, cluster, nil
}

// jwksCluster picks the cluster a key set is fetched through: the outbound cluster of a mesh
// service serving the URL's host and port over plain HTTP, else a generated
// "jwks|<host>|<port>" cluster (DNS, or static for an IP) that originates TLS for https,
// verifying the server against the system roots and the URL's host.
func (e *env) jwksCluster(uri string, existing map[string]bool) (string, *clusterv3.Cluster, error) {
	u, _ := url.Parse(uri) // validated
	host := u.Hostname()
	port := u.Port()
	if port == "" {
		port = "80"
		if u.Scheme == "https" {
			port = "443"
		}
	}
	n, _ := strconv.ParseUint(port, 10, 32)
	if u.Scheme == "http" {
		if name := OutboundClusterName(uint32(n), "", host); existing[name] {
			return name, nil, nil
		}
	}
	name := "jwks|" + host + "|" + port
	c := &clusterv3.Cluster{
		Name:           name,
		ConnectTimeout: e.connectTimeout(nil),
		LoadAssignment: &endpointv3.ClusterLoadAssignment{
			ClusterName: name,
			Endpoints: []*endpointv3.LocalityLbEndpoints{{
				LbEndpoints: []*endpointv3.LbEndpoint{lbEndpoint(socketAddress(host, uint32(n)), 0)},
			}},
		},
	}
	ip := net.ParseIP(host)
	if ip != nil {
		c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC}
	} else {
		c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STRICT_DNS}
		c.DnsLookupFamily = clusterv3.Cluster_V4_ONLY
	}
	if u.Scheme == "https" {
		san := &tlsv3.SubjectAltNameMatcher{SanType: tlsv3.SubjectAltNameMatcher_DNS, Matcher: exactString(host)}
		sni := host
		if ip != nil {
			san.SanType, sni = tlsv3.SubjectAltNameMatcher_IP_ADDRESS, ""
		}
		ts, err := tlsSocket(&tlsv3.UpstreamTlsContext{
			Sni: sni,
			CommonTlsContext: &tlsv3.CommonTlsContext{ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{
				ValidationContext: &tlsv3.CertificateValidationContext{
					TrustedCa:                 &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: systemRootsFile}},
					MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{san},
				},
			}},
		})
		if err != nil {
			return "", nil, fmt.Errorf("cluster %s: tls context: %w", name, err)
		}
		c.TransportSocket = ts
	}
	return name, c, nil
}
