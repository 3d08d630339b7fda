package config

import security "istio.io/api/security/v1beta1"

// validatePeerAuthentication checks a PeerAuthentication. Until its translation lands, every field
// is refused: Trellis never accepts security config it would silently ignore.
func validatePeerAuthentication(c *checker, p *security.PeerAuthentication) {
	onlySet(c, "spec", p)
}
