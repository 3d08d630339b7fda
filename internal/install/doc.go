// Package install renders the manifests that put Trellis on a Kubernetes
// cluster (`trellis install | kubectl apply -f -`): Istio's CRDs, so that
// Istio's own YAML applies unchanged; the control plane's Namespace,
// ServiceAccount and least-privilege RBAC; its Deployment (every replica
// serves xDS, leader election is only for writes), PodDisruptionBudget and
// Services; the `istio` ConfigMap with the MeshConfig under `mesh`, as
// Istio keeps it; and the sidecar injector's MutatingWebhookConfiguration
// with the CA bundle that verifies the webhook's certificate.
//
// The output is deterministic: the same Options give the same bytes, so a
// rendered file can be diffed and kept under version control. It is built
// from client-go's typed objects (the compiler checks field names) and
// printed with sorted keys.
package install
