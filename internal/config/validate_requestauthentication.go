package config

import security "istio.io/api/security/v1beta1"

// validateRequestAuthentication checks a RequestAuthentication. Until its translation lands, every field
// is refused: Trellis never accepts security config it would silently ignore.
func validateRequestAuthentication(c *checker, p *security.RequestAuthentication) {
	onlySet(c, "spec", p)
}
