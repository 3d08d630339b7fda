// Package identity is trellis-proxy's identity agent, the part of Istio's pilot-agent that gets a
// workload its certificate: it makes an ECDSA P-256 key and a CSR carrying the workload's SPIFFE ID,
// asks the CA over Istio's IstioCertificateService/CreateCertificate (gRPC over TLS, bearer token),
// keeps the chain and the CA's root in a Store, and rotates the certificate at half its lifetime
// (Istio's SECRET_GRACE_PERIOD_RATIO), retrying with back-off.
//
// The Store serves Istio's two SDS secrets, "default" (the workload's chain and key) and "ROOTCA"
// (the trust bundle), to the TLS contexts xdsconfig builds. They look secrets up on every handshake,
// so a rotation reaches new connections at once and never touches open ones.
//
// Nothing here logs a private key or a token. It must not depend on the control plane.
package identity
