package config

import (
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"strconv"

	security "istio.io/api/security/v1beta1"
)

// validateRequestAuthentication checks a RequestAuthentication with Istio's rules
// (pkg/config/validation validateJwtRule), refusing what Trellis does not translate.
func validateRequestAuthentication(c *checker, p *security.RequestAuthentication) {
	onlySet(c, "spec", p, "selector", "targetRef", "targetRefs", "jwtRules")
	validateSecuritySelector(c, p.GetSelector().GetMatchLabels())
	refuseTargetRefs(c, p.GetTargetRef() != nil, len(p.GetTargetRefs()) > 0)
	for i, r := range p.GetJwtRules() {
		validateJWTRule(c, fmt.Sprintf("spec.jwtRules[%d]", i), r)
	}
}

func validateJWTRule(c *checker, path string, r *security.JWTRule) {
	onlySet(c, path, r, "issuer", "audiences", "jwksUri", "jwks", "fromHeaders", "fromParams", "fromCookies",
		"outputPayloadToHeader", "outputClaimToHeaders", "forwardOriginalToken", "timeout")
	if r.GetIssuer() == "" {
		c.errorf(path+".issuer", "required")
	}
	for i, a := range r.GetAudiences() {
		if a == "" {
			c.errorf(fmt.Sprintf("%s.audiences[%d]", path, i), "must not be empty")
		}
	}
	switch {
	case r.GetJwks() != "":
		if err := checkJWKS(r.GetJwks()); err != nil {
			c.errorf(path+".jwks", "%v", err)
		}
	case r.GetJwksUri() != "":
	default:
		c.errorf(path+".jwksUri", "set jwksUri (or jwks): Trellis does not yet discover the key set from the issuer's OpenID configuration")
	}
	if u := r.GetJwksUri(); u != "" {
		if reason := jwksURIProblem(u); reason != "" {
			c.errorf(path+".jwksUri", "%q: %s", u, reason)
		}
	}
	for i, h := range r.GetFromHeaders() {
		hp := fmt.Sprintf("%s.fromHeaders[%d]", path, i)
		onlySet(c, hp, h, "name", "prefix")
		switch {
		case h.GetName() == "":
			c.errorf(hp+".name", "required")
		case !isHeaderName(h.GetName()):
			c.errorf(hp+".name", "%q is not a valid header name", h.GetName())
		}
	}
	for i, q := range r.GetFromParams() {
		if q == "" {
			c.errorf(fmt.Sprintf("%s.fromParams[%d]", path, i), "must not be empty")
		}
	}
	for i, k := range r.GetFromCookies() {
		if k == "" {
			c.errorf(fmt.Sprintf("%s.fromCookies[%d]", path, i), "must not be empty")
		}
	}
	if h := r.GetOutputPayloadToHeader(); h != "" && !isHeaderName(h) {
		c.errorf(path+".outputPayloadToHeader", "%q is not a valid header name", h)
	}
	for i, ch := range r.GetOutputClaimToHeaders() {
		cp := fmt.Sprintf("%s.outputClaimToHeaders[%d]", path, i)
		onlySet(c, cp, ch, "header", "claim")
		switch {
		case ch.GetHeader() == "":
			c.errorf(cp+".header", "required")
		case !isHeaderName(ch.GetHeader()):
			c.errorf(cp+".header", "%q is not a valid header name", ch.GetHeader())
		}
		if ch.GetClaim() == "" {
			c.errorf(cp+".claim", "required")
		}
	}
	validateDuration(c, path+".timeout", r.GetTimeout(), false)
}

// jwksURIProblem is Istio's ParseJwksURI: an absolute http or https URL with a host.
func jwksURIProblem(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "not a URL: " + err.Error()
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "want an http:// or https:// URL"
	}
	if u.Hostname() == "" {
		return "the URL has no host"
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.ParseUint(p, 10, 32); err != nil || !validPort(uint32(n)) {
			return fmt.Sprintf("port %q: want 1-65535", p)
		}
	}
	if ip := net.ParseIP(u.Hostname()); ip == nil && !isHostname(u.Hostname()) {
		return fmt.Sprintf("%q is not a host name", u.Hostname())
	}
	return ""
}

// checkJWKS checks an inline JSON Web Key Set (RFC 7517) for what a verifier needs: a "keys"
// list whose keys carry their type's public parameters.
func checkJWKS(s string) error {
	var set struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := json.Unmarshal([]byte(s), &set); err != nil {
		return fmt.Errorf("not a JSON Web Key Set: %v", err)
	}
	if len(set.Keys) == 0 {
		return fmt.Errorf(`not a JSON Web Key Set: want {"keys": [...]} with at least one key`)
	}
	need := map[string][]string{"RSA": {"n", "e"}, "EC": {"crv", "x", "y"}, "OKP": {"crv", "x"}}
	for i, k := range set.Keys {
		kty, _ := k["kty"].(string)
		params, ok := need[kty]
		if !ok {
			return fmt.Errorf("keys[%d].kty: %q: want RSA, EC or OKP", i, kty)
		}
		for _, p := range params {
			if v, _ := k[p].(string); v == "" {
				return fmt.Errorf("keys[%d]: a %s key needs %q", i, kty, p)
			}
		}
	}
	return nil
}
