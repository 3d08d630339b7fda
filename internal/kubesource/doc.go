// Package kubesource is the control plane's Kubernetes config source: it
// watches a cluster through informers and turns what it holds into the same
// validated model.Config the file source (internal/config) produces.
//
// Kubernetes Services, their EndpointSlices and Pods become what Istio's
// registry builds from them: one MESH_INTERNAL, STATIC ServiceEntry per
// Service (host <name>.<namespace>.svc.cluster.local) listing its ready
// endpoints inline, and one WorkloadEntry per Pod in model.Config.Pods, so
// an endpoint carries its Pod's labels and service account and a sidecar is
// tied to its Pod by IP. Istio's own resources (networking, security and
// telemetry.istio.io) go through internal/config's parser and validator one
// by one: an invalid resource is left out (its last good version keeps
// serving) and reported to the caller and, by the leader only (see
// Elector), as a Kubernetes Event on it and in its status as Istio's
// validationMessages. Namespaces give their labels to model.Config and,
// once being deleted, take all their config out of it.
//
// It depends on client-go and internal/{config,model}; nothing downstream
// of the model (translate, xds) may import it.
package kubesource
