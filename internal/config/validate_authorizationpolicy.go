package config

import (
	"fmt"
	"strconv"
	"strings"

	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	security "istio.io/api/security/v1beta1"
)

// validateAuthorizationPolicy checks an AuthorizationPolicy with Istio's rules (pkg/config/validation
// ValidateAuthorizationPolicy), refusing what Trellis does not translate: Trellis never accepts
// security config it would silently ignore. The CUSTOM provider is checked against the mesh config
// by authorizationPolicyRefs.
func validateAuthorizationPolicy(c *checker, p *security.AuthorizationPolicy) {
	onlySet(c, "spec", p, "selector", "targetRef", "targetRefs", "rules", "action", "provider")
	validateSecuritySelector(c, p.GetSelector().GetMatchLabels())
	refuseTargetRefs(c, p.GetTargetRef() != nil, len(p.GetTargetRefs()) > 0)

	action := p.GetAction()
	switch action {
	case security.AuthorizationPolicy_CUSTOM:
		if p.GetProvider().GetName() == "" {
			c.errorf("spec.provider.name", "required with action CUSTOM: the name of an envoyExtAuthzHttp or envoyExtAuthzGrpc extension provider of the mesh config")
		}
		if len(p.GetRules()) == 0 {
			c.errorf("spec.rules", "CUSTOM action without rules would never be triggered (as in Istio); add an empty rule {} to check every request")
		}
	default:
		if p.GetProvider() != nil {
			c.errorf("spec.provider", "only allowed with action CUSTOM, got %s", action)
		}
	}
	for i, r := range p.GetRules() {
		validateAuthzRule(c, fmt.Sprintf("spec.rules[%d]", i), r)
	}
}

func validateSecuritySelector(c *checker, labels map[string]string) {
	validateSelector(c, "spec.selector.matchLabels", labels)
	for _, k := range sortedKeys(labels) {
		if strings.Contains(labels[k], "*") {
			c.errorf("spec.selector.matchLabels["+k+"]", "wildcard %q is not supported in a selector (as in Istio)", labels[k])
		}
	}
}

func refuseTargetRefs(c *checker, one, many bool) {
	const why = "attaches the policy to a Gateway API resource, which Trellis does not support yet; use selector"
	if one {
		c.errorf("spec.targetRef", why)
	}
	if many {
		c.errorf("spec.targetRefs", why)
	}
}

func validateAuthzRule(c *checker, path string, r *security.Rule) {
	onlySet(c, path, r, "from", "to", "when")
	for i, f := range r.GetFrom() {
		fp := fmt.Sprintf("%s.from[%d]", path, i)
		onlySet(c, fp, f, "source")
		s := f.GetSource()
		if s == nil {
			c.errorf(fp+".source", "required")
			continue
		}
		sp := fp + ".source"
		onlySet(c, sp, s, "principals", "notPrincipals", "requestPrincipals", "notRequestPrincipals",
			"namespaces", "notNamespaces", "ipBlocks", "notIpBlocks", "remoteIpBlocks", "notRemoteIpBlocks")
		if isEmptyMessage(s) {
			c.errorf(sp, "must not be empty; leave out from to match any source")
		}
		for _, l := range []struct {
			name   string
			values []string
		}{
			{"principals", s.GetPrincipals()}, {"notPrincipals", s.GetNotPrincipals()},
			{"requestPrincipals", s.GetRequestPrincipals()}, {"notRequestPrincipals", s.GetNotRequestPrincipals()},
			{"namespaces", s.GetNamespaces()}, {"notNamespaces", s.GetNotNamespaces()},
		} {
			validateWildcardValues(c, sp+"."+l.name, l.values)
		}
		for _, l := range []struct {
			name   string
			values []string
		}{
			{"ipBlocks", s.GetIpBlocks()}, {"notIpBlocks", s.GetNotIpBlocks()},
			{"remoteIpBlocks", s.GetRemoteIpBlocks()}, {"notRemoteIpBlocks", s.GetNotRemoteIpBlocks()},
		} {
			validateIPBlocks(c, sp+"."+l.name, l.values)
		}
	}
	for i, t := range r.GetTo() {
		tp := fmt.Sprintf("%s.to[%d]", path, i)
		onlySet(c, tp, t, "operation")
		o := t.GetOperation()
		if o == nil {
			c.errorf(tp+".operation", "required")
			continue
		}
		op := tp + ".operation"
		onlySet(c, op, o, "hosts", "notHosts", "ports", "notPorts", "methods", "notMethods", "paths", "notPaths")
		if isEmptyMessage(o) {
			c.errorf(op, "must not be empty; leave out to to match any operation")
		}
		validateWildcardValues(c, op+".hosts", o.GetHosts())
		validateWildcardValues(c, op+".notHosts", o.GetNotHosts())
		validateWildcardValues(c, op+".methods", o.GetMethods())
		validateWildcardValues(c, op+".notMethods", o.GetNotMethods())
		validatePorts(c, op+".ports", o.GetPorts())
		validatePorts(c, op+".notPorts", o.GetNotPorts())
		validatePaths(c, op+".paths", o.GetPaths())
		validatePaths(c, op+".notPaths", o.GetNotPaths())
	}
	for i, w := range r.GetWhen() {
		validateCondition(c, fmt.Sprintf("%s.when[%d]", path, i), w)
	}
}

// isEmptyMessage reports a message with no field set, e.g. "source: {}".
func isEmptyMessage(m proto.Message) bool { return proto.Size(m) == 0 }

// validateWildcardValues checks string values with Istio's matching forms: exact, "prefix*",
// "*suffix" or "*" (any, present). A "*" elsewhere would be matched literally by Istio, which is
// never what was meant.
func validateWildcardValues(c *checker, path string, values []string) {
	for i, v := range values {
		vp := fmt.Sprintf("%s[%d]", path, i)
		switch {
		case v == "":
			c.errorf(vp, "must not be empty")
		case v != "*" && strings.Contains(strings.TrimSuffix(strings.TrimPrefix(v, "*"), "*"), "*"):
			c.errorf(vp, "%q: '*' may only be the whole value, its first or its last character (exact, *suffix, prefix* or *)", v)
		case strings.HasPrefix(v, "*") && strings.HasSuffix(v, "*") && v != "*":
			c.errorf(vp, "%q: use either a prefix (abc*) or a suffix (*abc) match, not both", v)
		}
	}
}

func validateIPBlocks(c *checker, path string, values []string) {
	for i, v := range values {
		if !isIPOrCIDR(v) {
			c.errorf(fmt.Sprintf("%s[%d]", path, i), "%q is not an IP address or CIDR range (e.g. 10.0.0.1 or 10.0.0.0/16)", v)
		}
	}
}

func validatePorts(c *checker, path string, values []string) {
	for i, v := range values {
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil || !validPort(uint32(n)) {
			c.errorf(fmt.Sprintf("%s[%d]", path, i), "%q is not a port: want a number between 1 and 65535", v)
		}
	}
}

func validatePaths(c *checker, path string, values []string) {
	validateWildcardValues(c, path, values)
	for i, v := range values {
		vp := fmt.Sprintf("%s[%d]", path, i)
		switch {
		case strings.ContainsAny(v, "{}"):
			c.errorf(vp, "%q: path templates ({*}, {**}) are not supported by Trellis; use exact, prefix (/api/*) or suffix (*.png) paths", v)
		case v != "" && !strings.HasPrefix(v, "/") && !strings.HasPrefix(v, "*"):
			c.errorf(vp, "%q: a path starts with / (or * for a suffix match)", v)
		}
	}
}

// Condition keys (Istio's authorization policy conditions) Trellis translates.
const (
	keyRequestHeaders = "request.headers"
	keyRequestClaims  = "request.auth.claims"
)

var plainConditionKeys = map[string]string{
	"source.ip":              "ip",
	"remote.ip":              "ip",
	"destination.ip":         "ip",
	"destination.port":       "port",
	"source.namespace":       "string",
	"source.principal":       "string",
	"request.auth.principal": "string",
	"request.auth.audiences": "string",
	"request.auth.presenter": "string",
	"connection.sni":         "string",
}

func validateCondition(c *checker, path string, w *security.Condition) {
	onlySet(c, path, w, "key", "values", "notValues")
	if len(w.GetValues()) == 0 && len(w.GetNotValues()) == 0 {
		c.errorf(path, "set values or notValues")
	}
	key := w.GetKey()
	kind, known := plainConditionKeys[key]
	switch {
	case key == "":
		c.errorf(path+".key", "required")
		return
	case known:
	case strings.HasPrefix(key, keyRequestHeaders):
		names, err := bracketedNames(strings.TrimPrefix(key, keyRequestHeaders))
		if err == nil && len(names) != 1 {
			err = fmt.Errorf("want one header name, e.g. request.headers[x-user]")
		}
		if err != nil {
			c.errorf(path+".key", "%q: %v", key, err)
			return
		}
		kind = "string"
	case strings.HasPrefix(key, keyRequestClaims):
		if _, err := bracketedNames(strings.TrimPrefix(key, keyRequestClaims)); err != nil {
			c.errorf(path+".key", "%q: %v", key, err)
			return
		}
		kind = "string"
	default:
		c.errorf(path+".key", "%q is not supported; want one of request.headers[<name>], request.auth.claims[<claim>] (nested: [a][b]), %s", key, strings.Join(sortedKeys(plainConditionKeys), ", "))
		return
	}
	for _, l := range []struct {
		name   string
		values []string
	}{{"values", w.GetValues()}, {"notValues", w.GetNotValues()}} {
		switch kind {
		case "ip":
			validateIPBlocks(c, path+"."+l.name, l.values)
		case "port":
			validatePorts(c, path+"."+l.name, l.values)
		default:
			validateWildcardValues(c, path+"."+l.name, l.values)
		}
	}
}

// bracketedNames splits "[a][b]" into a and b: the names of a header or of a (nested) claim.
func bracketedNames(s string) ([]string, error) {
	if s == "" {
		return nil, fmt.Errorf("want a name in brackets, e.g. [groups]")
	}
	var names []string
	for s != "" {
		if s[0] != '[' {
			return nil, fmt.Errorf("want [name] segments, found %q", s)
		}
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return nil, fmt.Errorf("missing ]")
		}
		name := s[1:end]
		if name == "" || strings.ContainsAny(name, "[") {
			return nil, fmt.Errorf("empty or malformed name in brackets")
		}
		names = append(names, name)
		s = s[end+1:]
	}
	return names, nil
}

// Extension provider kinds for CUSTOM authorization (MeshConfig extensionProviders).
const (
	providerKindExtAuthzHTTP = "envoyExtAuthzHttp"
	providerKindExtAuthzGRPC = "envoyExtAuthzGrpc"
)

// validateMeshExtAuthz checks the envoyExtAuthzHttp and envoyExtAuthzGrpc extension providers with
// Istio's rules, refusing the fields Trellis does not translate.
func validateMeshExtAuthz(c *checker, m *meshv1alpha1.MeshConfig) {
	for i, p := range m.GetExtensionProviders() {
		kind := providerKind(p)
		kp := fmt.Sprintf("extensionProviders[%d].%s", i, kind)
		switch kind {
		case providerKindExtAuthzHTTP:
			h := p.GetEnvoyExtAuthzHttp()
			onlySet(c, kp, h, "service", "port", "timeout", "pathPrefix", "failOpen", "statusOnError",
				"includeHeadersInCheck", "includeRequestHeadersInCheck", "includeAdditionalHeadersInCheck",
				"includeRequestBodyInCheck", "headersToUpstreamOnAllow", "headersToDownstreamOnDeny", "headersToDownstreamOnAllow")
			validateExtAuthzService(c, kp, h.GetService(), h.GetPort())
			validateDuration(c, kp+".timeout", h.GetTimeout(), false)
			validateStatusOnError(c, kp+".statusOnError", h.GetStatusOnError())
			if pp := h.GetPathPrefix(); pp != "" && !strings.HasPrefix(pp, "/") {
				c.errorf(kp+".pathPrefix", "%q must start with /", pp)
			}
			for _, l := range []struct {
				name  string
				names []string
			}{
				//lint:ignore SA1019 Istio still honours the deprecated field when includeRequestHeadersInCheck is unset.
				{"includeHeadersInCheck", h.GetIncludeHeadersInCheck()},
				{"includeRequestHeadersInCheck", h.GetIncludeRequestHeadersInCheck()},
				{"headersToUpstreamOnAllow", h.GetHeadersToUpstreamOnAllow()},
				{"headersToDownstreamOnDeny", h.GetHeadersToDownstreamOnDeny()},
				{"headersToDownstreamOnAllow", h.GetHeadersToDownstreamOnAllow()},
			} {
				for j, n := range l.names {
					np := fmt.Sprintf("%s.%s[%d]", kp, l.name, j)
					switch {
					case n == "*":
						c.errorf(np, `a single wildcard "*" is not supported (as in Istio); use a prefix (x-*) or suffix (*-id) match`)
					case n == "":
						c.errorf(np, "must not be empty")
					}
				}
			}
			for _, k := range sortedKeys(h.GetIncludeAdditionalHeadersInCheck()) {
				if !isHeaderName(k) {
					c.errorf(kp+".includeAdditionalHeadersInCheck["+k+"]", "%q is not a valid header name", k)
				}
			}
		case providerKindExtAuthzGRPC:
			g := p.GetEnvoyExtAuthzGrpc()
			onlySet(c, kp, g, "service", "port", "timeout", "failOpen", "statusOnError", "includeRequestBodyInCheck")
			validateExtAuthzService(c, kp, g.GetService(), g.GetPort())
			validateDuration(c, kp+".timeout", g.GetTimeout(), false)
			validateStatusOnError(c, kp+".statusOnError", g.GetStatusOnError())
		}
	}
}

// validateExtAuthzService checks an ext_authz service: "<host>" or "<namespace>/<host>", as Istio
// accepts it.
func validateExtAuthzService(c *checker, path, service string, port uint32) {
	host := service
	if ns, h, scoped := strings.Cut(service, "/"); scoped {
		if !isDNS1123Label(ns) {
			c.errorf(path+".service", "%q: namespace %q is not a valid namespace", service, ns)
		}
		host = h
	}
	switch {
	case service == "":
		c.errorf(path+".service", "required: the authorization service's host, e.g. ext-authz.foo.svc.cluster.local (or foo/ext-authz.foo.svc.cluster.local)")
	case !isHostname(host):
		c.errorf(path+".service", "%q is not a host name (want <host> or <namespace>/<host>)", service)
	}
	if !validPort(port) {
		c.errorf(path+".port", "must be between 1 and 65535, got %d", port)
	}
}

func validateStatusOnError(c *checker, path, s string) {
	if s == "" {
		return
	}
	n, err := strconv.ParseInt(s, 10, 32)
	if _, known := typev3.StatusCode_name[int32(n)]; err != nil || !known || n == 0 {
		c.errorf(path, "%q is not an HTTP status code Envoy knows (e.g. 403, 500, 503)", s)
	}
}

func isHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		ch := s[i]
		ok := ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", ch) >= 0
		if !ok {
			return false
		}
	}
	return true
}

// authorizationPolicyRefs checks what an AuthorizationPolicy needs from the mesh config and its
// metadata: a CUSTOM policy's provider must be an ext_authz extension provider, and the dry-run
// annotation, which Trellis does not implement, must not be set (the policy would be enforced).
func authorizationPolicyRefs(mesh *meshv1alpha1.MeshConfig, docs []*document) []*ValidationError {
	var errs []*ValidationError
	for _, d := range docs {
		p, ok := d.spec.(*security.AuthorizationPolicy)
		if !ok {
			continue
		}
		if _, set := d.meta.Annotations[dryRunAnnotation]; set {
			path := "metadata.annotations"
			errs = append(errs, d.errorAt(path, d.lineOf(path),
				dryRunAnnotation+": dry-run policies are not supported by Trellis yet; remove the annotation (the policy would be enforced)"))
		}
		if p.GetAction() != security.AuthorizationPolicy_CUSTOM || p.GetProvider().GetName() == "" {
			continue
		}
		if reason := extAuthzProviderProblem(mesh, p.GetProvider().GetName()); reason != "" {
			path := "spec.provider.name"
			errs = append(errs, d.errorAt(path, d.lineOf(path), reason))
		}
	}
	return errs
}

const dryRunAnnotation = "istio.io/dry-run"

func extAuthzProviderProblem(m *meshv1alpha1.MeshConfig, name string) string {
	for _, p := range m.GetExtensionProviders() {
		if p.GetName() != name {
			continue
		}
		switch kind := providerKind(p); kind {
		case providerKindExtAuthzHTTP, providerKindExtAuthzGRPC:
			return ""
		default:
			return fmt.Sprintf("provider %q is a %s provider; CUSTOM authorization needs an envoyExtAuthzHttp or envoyExtAuthzGrpc provider", name, kind)
		}
	}
	return fmt.Sprintf("provider %q is not defined in the mesh config's extensionProviders", name)
}
