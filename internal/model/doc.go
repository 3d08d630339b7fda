// Package model is the typed, immutable snapshot of mesh configuration that
// translation reads: the Istio resources as loaded (with where they came
// from), plus the service registry derived from them.
//
// It must not depend on any config source (files, Kubernetes), on
// translation, or on xDS serving: sources produce a Snapshot, translation
// consumes one, and neither knows about the other.
package model
