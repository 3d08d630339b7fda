// Package crds holds Istio's CustomResourceDefinitions (networking, security,
// telemetry and extensions.istio.io), a byte-for-byte copy of
// kubernetes/customresourcedefinitions.gen.yaml from the istio.io/api module
// at the version go.mod requires. It is a copy because go:embed cannot reach
// another module's files; TestMatchesIstioAPIModule fails when go.mod moves
// istio.io/api and the copy was not refreshed (`make crds` or `go generate
// ./manifests/crds`).
package crds

import _ "embed"

//go:generate sh -c "cat \"$(go list -m -f '{{.Dir}}' istio.io/api)/kubernetes/customresourcedefinitions.gen.yaml\" > customresourcedefinitions.gen.yaml"

// IstioModuleFile is where istio.io/api keeps the CRDs, relative to the
// module's root.
const IstioModuleFile = "kubernetes/customresourcedefinitions.gen.yaml"

// YAML is the multi-document YAML of Istio's CRDs, as istio.io/api ships it.
//
//go:embed customresourcedefinitions.gen.yaml
var YAML []byte
