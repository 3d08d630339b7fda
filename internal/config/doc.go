// Package config is the file source of Trellis's mesh configuration: it reads
// Istio YAML (VirtualService, DestinationRule, ServiceEntry, WorkloadEntry,
// Gateway, Sidecar and a MeshConfig in mesh.yaml) from a directory, validates
// it with Istio's semantics, and reports every problem as
// "file:line: Kind namespace/name: field.path: reason", so a user can fix a
// bad file while the last good config keeps serving. Watch reloads the
// directory when it changes.
//
// It produces a *model.Config and must not depend on translation, xDS
// serving, the proxy or the CLI: sources feed the model, nothing flows back.
package config
