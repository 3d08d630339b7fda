// Package kubeenv runs a real Kubernetes API server for tests: etcd and kube-apiserver, both built
// from their Go modules at pinned versions by `make kube-tools` (internal/testenv/tools) and cached
// under .cache/kube/. Tests talk to it with client-go, or run binaries against its kubeconfig.
//
// One server is shared by all tests of a test binary (one package), started on first use by
// Shared and stopped by Run, which the package's TestMain calls:
//
//	func TestMain(m *testing.M) { os.Exit(kubeenv.Run(m)) }
//
//	func TestSomething(t *testing.T) {
//		kube := kubeenv.Shared(t)
//		ns := kube.Namespace(t) // a fresh namespace per test keeps tests apart
//		kube.Client().CoreV1().Services(ns).Create(...)
//	}
//
// Start gives a test a private server instead, stopped when the test ends.
//
// Only the API server runs: no controller manager, scheduler or kubelet. So nothing reacts to
// what tests write: EndpointSlices are not derived from Services (tests write them, as a
// controller would), Pods are never scheduled, deleted Namespaces stay Terminating, and the
// ServiceAccount admission plugin is off (no controller creates the "default" ServiceAccount, so
// it would reject every Pod). Admission webhooks, RBAC, CRDs with their schemas and CEL rules,
// watches and ClusterIP allocation (10.96.0.0/16) are all the real thing.
//
// Where the binaries are missing a test is skipped with a message naming `make kube-tools`; with
// TRELLIS_REQUIRE_KUBE=1 (which `make test` sets) it fails instead, so the one test command can
// never skip them silently.
//
// The processes run in their own process group and get SIGKILL from the kernel if the test
// binary dies (Pdeathsig), so a crashed or timed-out test leaves nothing running either.
package kubeenv
