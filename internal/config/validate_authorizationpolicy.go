package config

import security "istio.io/api/security/v1beta1"

// validateAuthorizationPolicy checks a AuthorizationPolicy. Until its translation lands, every field
// is refused: Trellis never accepts security config it would silently ignore.
func validateAuthorizationPolicy(c *checker, p *security.AuthorizationPolicy) {
	onlySet(c, "spec", p)
}
