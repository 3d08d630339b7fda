package config

import (
	networking "istio.io/api/networking/v1alpha3"
)

// validateClientTLS checks a DestinationRule's tls settings (top level,
// subset, or port level) for what Trellis translates: ISTIO_MUTUAL with the
// mesh's certificates, DISABLE, and SIMPLE/MUTUAL from certificate files.
func validateClientTLS(c *checker, path string, tls *networking.ClientTLSSettings) {
	if tls == nil {
		return
	}
	onlySet(c, path, tls, "mode", "clientCertificate", "privateKey", "caCertificates", "subjectAltNames", "sni", "insecureSkipVerify", "credentialName")
	if tls.GetCredentialName() != "" {
		c.errorf(path+".credentialName", "not supported yet: Trellis reads client TLS material from files; use clientCertificate, privateKey and caCertificates")
	}
	mode := tls.GetMode()
	if _, known := networking.ClientTLSSettings_TLSmode_name[int32(mode)]; !known {
		c.errorf(path+".mode", "unknown mode %d; want one of DISABLE, SIMPLE, MUTUAL, ISTIO_MUTUAL", mode)
		return
	}
	files := func(why string) {
		for _, f := range []struct{ name, value string }{
			{"clientCertificate", tls.GetClientCertificate()},
			{"privateKey", tls.GetPrivateKey()},
			{"caCertificates", tls.GetCaCertificates()},
		} {
			if f.value != "" {
				c.errorf(path+"."+f.name, "must not be set when mode is %s: %s", mode, why)
			}
		}
	}
	switch mode {
	case networking.ClientTLSSettings_DISABLE:
		files("the connection is plaintext")
		if len(tls.GetSubjectAltNames()) > 0 || tls.GetSni() != "" || tls.GetInsecureSkipVerify() != nil {
			c.errorf(path, "sni, subjectAltNames and insecureSkipVerify have no effect when mode is DISABLE")
		}
	case networking.ClientTLSSettings_ISTIO_MUTUAL:
		// As in Istio: the mesh's own certificates are used.
		files("the mesh's workload certificate and root are used")
		if tls.GetInsecureSkipVerify().GetValue() {
			c.errorf(path+".insecureSkipVerify", "must not be set when mode is ISTIO_MUTUAL: the mesh's root always verifies the peer")
		}
	case networking.ClientTLSSettings_SIMPLE:
		if tls.GetClientCertificate() != "" || tls.GetPrivateKey() != "" {
			c.errorf(path, "clientCertificate and privateKey are sent only when mode is MUTUAL")
		}
	case networking.ClientTLSSettings_MUTUAL:
		// As in Istio: MUTUAL needs the client's own certificate and key.
		if tls.GetClientCertificate() == "" && tls.GetCredentialName() == "" {
			c.errorf(path+".clientCertificate", "required when mode is MUTUAL")
		}
		if tls.GetPrivateKey() == "" && tls.GetCredentialName() == "" {
			c.errorf(path+".privateKey", "required when mode is MUTUAL")
		}
	}
	if tls.GetInsecureSkipVerify().GetValue() && (tls.GetCaCertificates() != "" || len(tls.GetSubjectAltNames()) > 0) {
		c.errorf(path+".insecureSkipVerify", "true skips verification; caCertificates and subjectAltNames would be ignored")
	}
}
