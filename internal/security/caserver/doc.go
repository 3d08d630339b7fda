// Package caserver serves the CA over Istio's gRPC API
// (istio.v1.auth.IstioCertificateService/CreateCertificate) on TLS, as istiod
// does on port 15012: a caller presents a bearer token and a CSR for its
// SPIFFE ID, and gets back a certificate chain, leaf first and root last.
//
// Who a caller is comes from a pluggable Authenticator: bootstrap tokens the
// CA minted (file mode) or Kubernetes service-account tokens checked with the
// TokenReview API. The CSR must ask for exactly the caller's identity in the
// mesh's trust domain. Tokens and keys are never logged.
//
// It imports the CA and client-go; the proxy must never import it.
package caserver
