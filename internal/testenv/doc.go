// Package testenv holds what tests need from the machine beyond their own
// process: for now, exclusive use of the fixed loopback addresses the demo
// mesh binds. It is imported by tests only.
//
// Its subpackages: adstest (raw xDS clients) and kubeenv (a real kube-apiserver and etcd,
// built by `make kube-tools`; see docs/testing.md).
package testenv
