package config

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"google.golang.org/protobuf/types/known/durationpb"
	networking "istio.io/api/networking/v1alpha3"
)

const meshGateway = "mesh"

func validateVirtualService(c *checker, vs *networking.VirtualService) {
	// No hosts makes a delegate (validateDelegates), as in Istio.
	boundToMesh := len(vs.GetGateways()) == 0
	for i, g := range vs.GetGateways() {
		path := fmt.Sprintf("spec.gateways[%d]", i)
		if g == meshGateway {
			boundToMesh = true
			continue
		}
		if reason := gatewayRefProblem(g); reason != "" {
			c.errorf(path, "%s", reason)
		}
	}
	for i, h := range vs.GetHosts() {
		path := fmt.Sprintf("spec.hosts[%d]", i)
		switch {
		case h == "*" && boundToMesh:
			c.errorf(path, `wildcard host "*" is not allowed for a VirtualService bound to the mesh; bind it to a gateway`)
		case !isWildcardHost(h) && !isIP(h):
			c.errorf(path, "%q is not a valid host name", h)
		}
	}
	if len(vs.GetHttp()) == 0 && len(vs.GetTcp()) == 0 && len(vs.GetTls()) == 0 {
		c.errorf("spec", "at least one of http, tcp or tls routes is required")
	}
	for i, r := range vs.GetHttp() {
		validateHTTPRoute(c, fmt.Sprintf("spec.http[%d]", i), r)
	}
	for i, r := range vs.GetTcp() {
		path := fmt.Sprintf("spec.tcp[%d]", i)
		validateL4Routes(c, path, r.GetRoute())
		for j, m := range r.GetMatch() {
			validateL4Match(c, fmt.Sprintf("%s.match[%d]", path, j), m.GetDestinationSubnets(), m.GetPort())
			validateMatchGateways(c, fmt.Sprintf("%s.match[%d]", path, j), m.GetGateways())
		}
	}
	for i, r := range vs.GetTls() {
		path := fmt.Sprintf("spec.tls[%d]", i)
		if len(r.GetMatch()) == 0 {
			c.errorf(path+".match", "at least one match is required")
		}
		for j, m := range r.GetMatch() {
			mpath := fmt.Sprintf("%s.match[%d]", path, j)
			if len(m.GetSniHosts()) == 0 {
				c.errorf(mpath+".sniHosts", "at least one SNI host is required")
			}
			for k, sni := range m.GetSniHosts() {
				if reason := sniHostProblem(sni, vs.GetHosts()); reason != "" {
					c.errorf(fmt.Sprintf("%s.sniHosts[%d]", mpath, k), "%s", reason)
				}
			}
			validateL4Match(c, mpath, m.GetDestinationSubnets(), m.GetPort())
			validateMatchGateways(c, mpath, m.GetGateways())
		}
		validateL4Routes(c, path, r.GetRoute())
	}
}

// gatewayRefProblem checks a VirtualService gateways entry: "mesh",
// "<name>" or "<namespace>/<name>".
func gatewayRefProblem(g string) string {
	ns, name, scoped := strings.Cut(g, "/")
	if !scoped {
		name, ns = ns, ""
	}
	switch {
	case g == "":
		return "must not be empty"
	case scoped && strings.Contains(name, "/"):
		return fmt.Sprintf("%q: want mesh, <gateway> or <namespace>/<gateway>", g)
	case scoped && !isDNS1123Label(ns):
		return fmt.Sprintf("%q: namespace %q is not a valid namespace", g, ns)
	case !isDNS1123Subdomain(name):
		return fmt.Sprintf("%q: %q is not a valid gateway name; want mesh, <gateway> or <namespace>/<gateway>", g, name)
	}
	return ""
}

func validateHTTPRoute(c *checker, path string, r *networking.HTTPRoute) {
	actions := 0
	for _, set := range []bool{len(r.GetRoute()) > 0, r.GetRedirect() != nil, r.GetDirectResponse() != nil, r.GetDelegate() != nil} {
		if set {
			actions++
		}
	}
	switch {
	case actions == 0:
		c.errorf(path+".route", "at least one route destination is required (or a redirect or directResponse)")
	case actions > 1:
		c.errorf(path, "set only one of route, redirect, directResponse or delegate")
	}
	for i, m := range r.GetMatch() {
		validateHTTPMatch(c, fmt.Sprintf("%s.match[%d]", path, i), m)
	}
	var total int64
	for i, d := range r.GetRoute() {
		dpath := fmt.Sprintf("%s.route[%d]", path, i)
		validateDestination(c, dpath+".destination", d.GetDestination())
		if w := d.GetWeight(); w < 0 || w > 100 {
			c.errorf(dpath+".weight", "must be between 0 and 100, got %d", w)
		}
		total += int64(d.GetWeight())
	}
	if n := len(r.GetRoute()); n > 1 && total != 100 {
		c.errorf(fmt.Sprintf("%s.route[%d].weight", path, n-1), "weights must sum to 100, got %d", total)
	}
	validateRedirect(c, path, r)
	if dr := r.GetDirectResponse(); dr != nil {
		if s := dr.GetStatus(); s < 200 || s > 599 {
			c.errorf(path+".directResponse.status", "must be between 200 and 599, got %d", s)
		}
		if n := len(dr.GetBody().GetString_()) + len(dr.GetBody().GetBytes()); n > maxDirectResponseBody {
			c.errorf(path+".directResponse.body", "%d bytes; at most %d (100 KiB) are allowed, as in Istio", n, maxDirectResponseBody)
		}
		for _, f := range []struct {
			name string
			set  bool
		}{{"fault", r.GetFault() != nil}, {"rewrite", r.GetRewrite() != nil}} {
			if f.set {
				c.errorf(path+"."+f.name, "cannot be combined with directResponse")
			}
		}
	}
	validateRewrite(c, path, r)
	validateDuration(c, path+".timeout", r.GetTimeout(), true)
	if rt := r.GetRetries(); rt != nil {
		validateRetries(c, path+".retries", rt)
	}
	if f := r.GetFault(); f != nil {
		validateFault(c, path+".fault", f)
	}
	if cp := r.GetCorsPolicy(); cp != nil {
		validateCORS(c, path+".corsPolicy", cp)
	}
	if mp := r.GetMirrorPercentage(); mp != nil && (mp.GetValue() < 0 || mp.GetValue() > 100) {
		c.errorf(path+".mirrorPercentage.value", "must be between 0 and 100, got %g", mp.GetValue())
	}
	//lint:ignore SA1019 users' existing VirtualServices still set the deprecated field; Istio validates it too.
	if mp := r.GetMirrorPercent(); mp != nil && mp.GetValue() > 100 {
		c.errorf(path+".mirrorPercent", "must be between 0 and 100, got %d", mp.GetValue())
	}
	if m := r.GetMirror(); m != nil {
		validateDestination(c, path+".mirror", m)
		if len(r.GetMirrors()) > 0 {
			c.errorf(path+".mirrors", "set mirror or mirrors, not both")
		}
	}
	for i, m := range r.GetMirrors() {
		mpath := fmt.Sprintf("%s.mirrors[%d]", path, i)
		validateDestination(c, mpath+".destination", m.GetDestination())
		validatePercentage(c, mpath+".percentage.value", m.GetPercentage())
	}
}

// maxDirectResponseBody is Istio's limit on a directResponse body.
const maxDirectResponseBody = 100 << 10

// validateRedirect follows Istio: a redirect must change something, uses a
// code Envoy can send, and excludes fault injection and rewrites.
func validateRedirect(c *checker, path string, r *networking.HTTPRoute) {
	rd := r.GetRedirect()
	if rd == nil {
		return
	}
	if rd.GetUri() == "" && rd.GetAuthority() == "" && rd.GetScheme() == "" && rd.GetRedirectPort() == nil {
		c.errorf(path+".redirect", "set at least one of uri, authority, scheme, port or derivePort")
	}
	if p := rd.GetPort(); p > 65535 {
		c.errorf(path+".redirect.port", "must be between 1 and 65535, got %d", p)
	}
	switch code := rd.GetRedirectCode(); code {
	case 0, 301, 302, 303, 307, 308:
	default:
		c.errorf(path+".redirect.redirectCode", "must be 301, 302, 303, 307 or 308 (what Envoy can send), got %d", code)
	}
	for _, f := range []struct {
		name string
		set  bool
	}{{"fault", r.GetFault() != nil}, {"rewrite", r.GetRewrite() != nil}} {
		if f.set {
			c.errorf(path+"."+f.name, "cannot be combined with redirect")
		}
	}
}

func validateRewrite(c *checker, path string, r *networking.HTTPRoute) {
	rw := r.GetRewrite()
	if rw == nil {
		return
	}
	path += ".rewrite"
	re := rw.GetUriRegexRewrite()
	switch {
	case rw.GetUri() == "" && rw.GetAuthority() == "" && re == nil:
		c.errorf(path, "set at least one of uri, authority or uriRegexRewrite")
	case rw.GetUri() != "" && re != nil:
		c.errorf(path, "set uri or uriRegexRewrite, not both")
	}
	if re != nil {
		if re.GetMatch() == "" {
			c.errorf(path+".uriRegexRewrite.match", "required")
		} else if _, err := regexp.Compile(re.GetMatch()); err != nil {
			c.errorf(path+".uriRegexRewrite.match", "invalid RE2 regex: %s", strings.TrimPrefix(err.Error(), "error parsing regexp: "))
		}
	}
	if rw.GetUri() != "" {
		// Envoy cannot rewrite a prefix it did not match as a prefix.
		for i, m := range r.GetMatch() {
			if m.GetUri().GetRegex() != "" {
				c.errorf(fmt.Sprintf("%s.uri", path), "cannot rewrite the prefix of a regex match (match[%d].uri.regex); use uriRegexRewrite", i)
				break
			}
		}
	}
}

// retryOnTokens are Envoy's HTTP and gRPC retry conditions Istio accepts
// in retries.retryOn, besides HTTP status codes.
var retryOnTokens = map[string]bool{
	"5xx": true, "gateway-error": true, "reset": true, "connect-failure": true, "retriable-4xx": true,
	"refused-stream": true, "retriable-status-codes": true, "retriable-headers": true,
	"envoy-ratelimited": true, "http3-post-connect-failure": true, "cancelled": true,
	"deadline-exceeded": true, "internal": true, "resource-exhausted": true, "unavailable": true,
}

func validateRetries(c *checker, path string, rt *networking.HTTPRetry) {
	if rt.GetAttempts() < 0 {
		c.errorf(path+".attempts", "must not be negative, got %d", rt.GetAttempts())
	}
	validateDuration(c, path+".perTryTimeout", rt.GetPerTryTimeout(), false)
	validateDuration(c, path+".backoff", rt.GetBackoff(), false)
	for tok := range strings.SplitSeq(rt.GetRetryOn(), ",") {
		tok = strings.TrimSpace(tok)
		if tok == "" || retryOnTokens[tok] {
			continue
		}
		if n, err := strconv.Atoi(tok); err == nil {
			if n < 100 || n > 599 {
				c.errorf(path+".retryOn", "%q is not an HTTP status code", tok)
			}
			continue
		}
		if tok == "reset-before-request" {
			c.errorf(path+".retryOn", "%q is not supported by trellis-proxy yet", tok)
			continue
		}
		c.errorf(path+".retryOn", "unknown retry condition %q; want Envoy's (5xx, gateway-error, connect-failure, ...) or a status code", tok)
	}
}

func validateCORS(c *checker, path string, p *networking.CorsPolicy) {
	for i, o := range p.GetAllowOrigins() {
		opath := fmt.Sprintf("%s.allowOrigins[%d]", path, i)
		if o.GetMatchType() == nil {
			c.errorf(opath, "set exactly one of exact, prefix or regex")
			continue
		}
		if o.GetPrefix() == "" && o.GetExact() == "" && o.GetRegex() == "" {
			c.errorf(opath, "must not be empty")
			continue
		}
		validateStringMatch(c, opath, o)
	}
	for i, m := range p.GetAllowMethods() {
		if !httpMethods[m] {
			c.errorf(fmt.Sprintf("%s.allowMethods[%d]", path, i), "%q is not an HTTP method", m)
		}
	}
	for _, f := range []struct {
		name  string
		names []string
	}{{"allowHeaders", p.GetAllowHeaders()}, {"exposeHeaders", p.GetExposeHeaders()}} {
		for i, h := range f.names {
			if !headerNameRE.MatchString(h) {
				c.errorf(fmt.Sprintf("%s.%s[%d]", path, f.name, i), "%q is not a header name", h)
			}
		}
	}
	if m := p.GetMaxAge(); m != nil {
		switch d := m.AsDuration(); {
		case d < 0:
			c.errorf(path+".maxAge", "must not be negative, got %s", d)
		case m.GetNanos() != 0:
			c.errorf(path+".maxAge", "%s: CORS max-age is whole seconds", d)
		}
	}
}

var httpMethods = map[string]bool{
	"GET": true, "HEAD": true, "POST": true, "PUT": true, "PATCH": true, "DELETE": true,
	"OPTIONS": true, "TRACE": true, "CONNECT": true, "*": true,
}

var headerNameRE = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")

func validateHTTPMatch(c *checker, path string, m *networking.HTTPMatchRequest) {
	validateStringMatch(c, path+".uri", m.GetUri())
	validateStringMatch(c, path+".scheme", m.GetScheme())
	validateStringMatch(c, path+".method", m.GetMethod())
	validateStringMatch(c, path+".authority", m.GetAuthority())
	for _, f := range []struct {
		name string
		m    map[string]*networking.StringMatch
	}{{"headers", m.GetHeaders()}, {"queryParams", m.GetQueryParams()}, {"withoutHeaders", m.GetWithoutHeaders()}} {
		for k, sm := range f.m {
			kpath := fmt.Sprintf("%s.%s[%s]", path, f.name, k)
			if k == "" {
				c.errorf(kpath, "header name must not be empty")
			}
			// An empty match on a header means "present", as in Istio.
			if sm != nil && sm.GetMatchType() != nil {
				validateStringMatch(c, kpath, sm)
			}
		}
	}
	if p := m.GetPort(); p > 65535 {
		c.errorf(path+".port", "must be between 1 and 65535, got %d", p)
	}
}

// validateStringMatch: a StringMatch that is present must set exactly one
// of exact, prefix and regex (setting two is caught while parsing), and a
// regex must compile as RE2, the dialect Envoy uses.
func validateStringMatch(c *checker, path string, sm *networking.StringMatch) {
	if sm == nil {
		return
	}
	switch t := sm.GetMatchType().(type) {
	case nil:
		c.errorf(path, "set exactly one of exact, prefix or regex")
	case *networking.StringMatch_Regex:
		if t.Regex == "" {
			c.errorf(path+".regex", "must not be empty")
		} else if _, err := regexp.Compile(t.Regex); err != nil {
			c.errorf(path+".regex", "invalid RE2 regex: %s", strings.TrimPrefix(err.Error(), "error parsing regexp: "))
		}
	}
}

func validateDestination(c *checker, path string, d *networking.Destination) {
	if d == nil {
		c.errorf(path, "required")
		return
	}
	switch h := d.GetHost(); {
	case h == "":
		c.errorf(path+".host", "required")
	case strings.Contains(h, "*"):
		c.errorf(path+".host", "%q: a destination host must not be a wildcard", h)
	case !isHostname(h) && !isIP(h):
		c.errorf(path+".host", "%q is not a valid host name", h)
	}
	if s := d.GetSubset(); s != "" && !isDNS1123Label(s) {
		c.errorf(path+".subset", "%q is not a valid subset name", s)
	}
	if p := d.GetPort(); p != nil && !validPort(p.GetNumber()) {
		c.errorf(path+".port.number", "must be between 1 and 65535, got %d", p.GetNumber())
	}
}

// validateL4Routes applies the HTTP destination rules to TCP and TLS routes.
func validateL4Routes(c *checker, path string, routes []*networking.RouteDestination) {
	if len(routes) == 0 {
		c.errorf(path+".route", "at least one route destination is required")
	}
	var total int64
	for i, d := range routes {
		dpath := fmt.Sprintf("%s.route[%d]", path, i)
		validateDestination(c, dpath+".destination", d.GetDestination())
		if w := d.GetWeight(); w < 0 || w > 100 {
			c.errorf(dpath+".weight", "must be between 0 and 100, got %d", w)
		}
		total += int64(d.GetWeight())
	}
	if n := len(routes); n > 1 && total != 100 {
		c.errorf(fmt.Sprintf("%s.route[%d].weight", path, n-1), "weights must sum to 100, got %d", total)
	}
}

func validateL4Match(c *checker, path string, subnets []string, port uint32) {
	for i, s := range subnets {
		if !isIPOrCIDR(s) {
			c.errorf(fmt.Sprintf("%s.destinationSubnets[%d]", path, i), "%q is not an IP address or CIDR", s)
		}
	}
	if port > 65535 {
		c.errorf(path+".port", "must be between 1 and 65535, got %d", port)
	}
}

func validateFault(c *checker, path string, f *networking.HTTPFaultInjection) {
	if f.GetDelay() == nil && f.GetAbort() == nil {
		c.errorf(path, "set delay or abort")
	}
	if d := f.GetDelay(); d != nil {
		switch {
		case d.GetExponentialDelay() != nil:
			c.errorf(path+".delay.exponentialDelay", "not supported (by Istio either); use fixedDelay")
		case d.GetFixedDelay() == nil:
			c.errorf(path+".delay.fixedDelay", "required")
		}
		validateDuration(c, path+".delay.fixedDelay", d.GetFixedDelay(), false)
		validatePercentage(c, path+".delay.percentage.value", d.GetPercentage())
		//lint:ignore SA1019 users' existing VirtualServices still set the deprecated field; Istio validates it too.
		if p := d.GetPercent(); p < 0 || p > 100 {
			c.errorf(path+".delay.percent", "must be between 0 and 100, got %d", p)
		}
	}
	if a := f.GetAbort(); a != nil {
		switch e := a.GetErrorType().(type) {
		case nil:
			c.errorf(path+".abort.httpStatus", "required")
		case *networking.HTTPFaultInjection_Abort_HttpStatus:
			if e.HttpStatus < 200 || e.HttpStatus > 599 {
				c.errorf(path+".abort.httpStatus", "must be between 200 and 599, got %d", e.HttpStatus)
			}
		case *networking.HTTPFaultInjection_Abort_GrpcStatus:
			if !grpcStatusNames[e.GrpcStatus] {
				c.errorf(path+".abort.grpcStatus", "unknown gRPC status %q; want e.g. UNAVAILABLE, DEADLINE_EXCEEDED, INTERNAL", e.GrpcStatus)
			}
		case *networking.HTTPFaultInjection_Abort_Http2Error:
			c.errorf(path+".abort.http2Error", "not supported (by Istio either); use httpStatus or grpcStatus")
		}
		validatePercentage(c, path+".abort.percentage.value", a.GetPercentage())
	}
}

var grpcStatusNames = map[string]bool{
	"OK": true, "CANCELLED": true, "UNKNOWN": true, "INVALID_ARGUMENT": true, "DEADLINE_EXCEEDED": true,
	"NOT_FOUND": true, "ALREADY_EXISTS": true, "PERMISSION_DENIED": true, "RESOURCE_EXHAUSTED": true,
	"FAILED_PRECONDITION": true, "ABORTED": true, "OUT_OF_RANGE": true, "UNIMPLEMENTED": true,
	"INTERNAL": true, "UNAVAILABLE": true, "DATA_LOSS": true, "UNAUTHENTICATED": true,
}

func validatePercentage(c *checker, path string, p *networking.Percent) {
	if p != nil && (p.GetValue() < 0 || p.GetValue() > 100) {
		c.errorf(path, "must be between 0 and 100, got %g", p.GetValue())
	}
}

// validateDuration follows Istio: durations are at least 1ms; a route
// timeout may also be 0, meaning none.
func validateDuration(c *checker, path string, d *durationpb.Duration, zeroOK bool) {
	if d == nil {
		return
	}
	switch v := d.AsDuration(); {
	case v == 0 && zeroOK:
	case v < 1e6:
		c.errorf(path, "must be at least 1ms, got %s", v)
	}
}

// sniHostProblem checks a tls match's SNI host as Istio does: a valid host name, "*" excluded,
// that one of the VirtualService's hosts covers (or that covers one of them, for a wildcard).
func sniHostProblem(sni string, hosts []string) string {
	if sni == "*" || !isWildcardHost(sni) {
		return fmt.Sprintf("%q is not a valid SNI host name", sni)
	}
	for _, h := range hosts {
		if h == "*" || wildcardCovers(h, sni) || wildcardCovers(sni, h) {
			return ""
		}
		// A short VirtualService host ("reviews") stands for its FQDN in the namespace.
		if !strings.Contains(h, ".") && strings.HasPrefix(sni, h+".") {
			return ""
		}
	}
	return fmt.Sprintf("%q is not a compatible subset of any of the VirtualService hosts %v", sni, hosts)
}

// wildcardCovers reports whether pattern ("host" or "*.suffix") matches host.
func wildcardCovers(pattern, host string) bool {
	if suffix, ok := strings.CutPrefix(pattern, "*"); ok {
		return strings.HasSuffix(host, suffix)
	}
	return pattern == host
}

// validateMatchGateways checks a tcp or tls match's gateways: "mesh", "<name>" or "<namespace>/<name>".
func validateMatchGateways(c *checker, path string, gws []string) {
	for i, g := range gws {
		if g == meshGateway {
			continue
		}
		if reason := gatewayRefProblem(g); reason != "" {
			c.errorf(fmt.Sprintf("%s.gateways[%d]", path, i), "%s", reason)
		}
	}
}
