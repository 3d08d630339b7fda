package config

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	security "istio.io/api/security/v1beta1"
)

// validatePeerAuthentication checks a PeerAuthentication with Istio's rules
// (pilot/pkg/config/kube/crdclient validation): a selector needs labels,
// portLevelMtls needs a selector and valid ports, and every mode is one Istio
// knows. Conflicts between resources are peerAuthenticationConflicts'.
func validatePeerAuthentication(c *checker, p *security.PeerAuthentication) {
	onlySet(c, "spec", p, "selector", "mtls", "portLevelMtls")
	if s := p.GetSelector(); s != nil {
		onlySet(c, "spec.selector", s, "matchLabels")
		if len(s.GetMatchLabels()) == 0 {
			c.errorf("spec.selector.matchLabels", "at least one label is required; leave selector out for a namespace-wide policy")
		}
		validateSelector(c, "spec.selector.matchLabels", s.GetMatchLabels())
	}
	validateMTLSMode(c, "spec.mtls", p.GetMtls())
	if len(p.GetPortLevelMtls()) > 0 && len(p.GetSelector().GetMatchLabels()) == 0 {
		// As Istio: a port means something only on a known workload.
		c.errorf("spec.portLevelMtls", "requires a workload selector (as in Istio): ports are the selected workload's")
	}
	for _, port := range slices.Sorted(maps.Keys(p.GetPortLevelMtls())) {
		path := fmt.Sprintf("spec.portLevelMtls[%d]", port)
		if !validPort(port) {
			c.errorf(path, "port must be between 1 and 65535, got %d", port)
		}
		m := p.GetPortLevelMtls()[port]
		if m == nil {
			c.errorf(path, "required: set mode")
			continue
		}
		validateMTLSMode(c, path, m)
	}
}

func validateMTLSMode(c *checker, path string, m *security.PeerAuthentication_MutualTLS) {
	if m == nil {
		return
	}
	onlySet(c, path, m, "mode")
	if _, known := security.PeerAuthentication_MutualTLS_Mode_name[int32(m.GetMode())]; !known {
		c.errorf(path+".mode", "unknown mode %d; want one of UNSET, DISABLE, PERMISSIVE, STRICT", m.GetMode())
	}
}

// peerAuthenticationConflicts finds PeerAuthentications that compete for the
// same workloads: more than one mesh-wide policy (root namespace, no
// selector), more than one namespace-wide policy in a namespace, or two with
// the same selector in a namespace. Istio lets the oldest win; Trellis reads
// files, which have no creation time, so it refuses the ambiguity instead.
func peerAuthenticationConflicts(mesh *meshv1alpha1.MeshConfig, docs []*document) []*ValidationError {
	var pas []*document
	for _, d := range docs {
		if _, ok := d.spec.(*security.PeerAuthentication); ok {
			pas = append(pas, d)
		}
	}
	sortDocs(pas)
	var errs []*ValidationError
	first := map[string]*document{} // namespace + "|" + canonical selector
	for _, d := range pas {
		sel := d.spec.(*security.PeerAuthentication).GetSelector().GetMatchLabels()
		key := d.meta.Namespace + "|" + canonicalLabels(sel)
		other, dup := first[key]
		if !dup {
			first[key] = d
			continue
		}
		var what, path string
		switch {
		case len(sel) > 0:
			what, path = "another PeerAuthentication in namespace "+d.meta.Namespace+" has the same selector", "spec.selector"
		case d.meta.Namespace == mesh.GetRootNamespace():
			what, path = "only one mesh-wide PeerAuthentication (root namespace "+d.meta.Namespace+", no selector) is allowed", "metadata.name"
		default:
			what, path = "only one namespace-wide PeerAuthentication (no selector) per namespace is allowed", "metadata.name"
		}
		errs = append(errs, d.errorAt(path, d.lineOf(path),
			fmt.Sprintf("%s; %s (%s) is one (Istio would silently use the oldest)", what, other.meta.Key(), other.meta.Source)))
	}
	return errs
}

func canonicalLabels(labels map[string]string) string {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		b.WriteString(k + "=" + labels[k] + ",")
	}
	return b.String()
}
