// Package ca is the mesh's certificate authority: it holds a signing key and
// certificate (a self-signed root it created, or a user's intermediate in
// Istio's cacerts layout), persists a created root (a directory, or Istio's
// istio-ca-secret Secret in Kubernetes), issues workload certificates for
// SPIFFE identities from CSRs, and mints and verifies the bootstrap tokens
// that authenticate certificate requests in file mode.
//
// It decides nothing about who may have which identity: the gRPC service
// (internal/security/caserver) authenticates callers and checks the CSR's
// identity against theirs before calling Sign.
//
// It must not import the proxy, translation or the xDS server; it uses
// client-go only to read and write its Secret.
package ca
