package translate

import (
	"testing"

	security "istio.io/api/security/v1beta1"
	typev1beta1 "istio.io/api/type/v1beta1"

	"github.com/trellis-mesh/trellis/internal/model"
)

// TestPeerAuthenticationPrecedenceFollowsIstio: workload selector over
// namespace over mesh root, port level over workload, UNSET inheriting,
// PERMISSIVE by default; selectors apply in their own namespace only.
func TestPeerAuthenticationPrecedenceFollowsIstio(t *testing.T) {
	const (
		unset      = security.PeerAuthentication_MutualTLS_UNSET
		disable    = security.PeerAuthentication_MutualTLS_DISABLE
		permissive = security.PeerAuthentication_MutualTLS_PERMISSIVE
		strict     = security.PeerAuthentication_MutualTLS_STRICT
	)
	pa := func(ns, name string, sel map[string]string, mode security.PeerAuthentication_MutualTLS_Mode, ports map[uint32]security.PeerAuthentication_MutualTLS_Mode) *model.PeerAuthentication {
		spec := &security.PeerAuthentication{Mtls: &security.PeerAuthentication_MutualTLS{Mode: mode}}
		if sel != nil {
			spec.Selector = &typev1beta1.WorkloadSelector{MatchLabels: sel}
		}
		for p, m := range ports {
			if spec.PortLevelMtls == nil {
				spec.PortLevelMtls = map[uint32]*security.PeerAuthentication_MutualTLS{}
			}
			spec.PortLevelMtls[p] = &security.PeerAuthentication_MutualTLS{Mode: m}
		}
		return &model.PeerAuthentication{Meta: model.Meta{Kind: "PeerAuthentication", Namespace: ns, Name: name}, Spec: spec}
	}
	app := map[string]string{"app": "httpbin"}
	tests := []struct {
		name  string
		pas   []*model.PeerAuthentication
		ns    string
		port  uint32
		want  security.PeerAuthentication_MutualTLS_Mode
		other security.PeerAuthentication_MutualTLS_Mode // on port 9999
	}{
		{"nothing: PERMISSIVE", nil, "foo", 80, permissive, permissive},
		{"mesh STRICT", []*model.PeerAuthentication{pa("istio-system", "default", nil, strict, nil)}, "foo", 80, strict, strict},
		{"namespace over mesh", []*model.PeerAuthentication{
			pa("istio-system", "default", nil, strict, nil), pa("foo", "default", nil, disable, nil)}, "foo", 80, disable, disable},
		{"namespace UNSET inherits mesh", []*model.PeerAuthentication{
			pa("istio-system", "default", nil, strict, nil), pa("foo", "default", nil, unset, nil)}, "foo", 80, strict, strict},
		{"workload over namespace", []*model.PeerAuthentication{
			pa("foo", "default", nil, strict, nil), pa("foo", "httpbin", app, disable, nil)}, "foo", 80, disable, disable},
		{"another namespace's policy does not apply", []*model.PeerAuthentication{
			pa("bar", "default", nil, strict, nil), pa("bar", "httpbin", app, strict, nil)}, "foo", 80, permissive, permissive},
		{"root namespace selector only for root namespace workloads", []*model.PeerAuthentication{
			pa("istio-system", "httpbin", app, strict, nil)}, "foo", 80, permissive, permissive},
		{"port level over workload", []*model.PeerAuthentication{
			pa("foo", "httpbin", app, strict, map[uint32]security.PeerAuthentication_MutualTLS_Mode{80: permissive})}, "foo", 80, permissive, strict},
		{"port UNSET inherits the workload, which inherits the mesh", []*model.PeerAuthentication{
			pa("istio-system", "default", nil, strict, nil),
			pa("foo", "httpbin", app, unset, map[uint32]security.PeerAuthentication_MutualTLS_Mode{80: unset, 9999: disable})}, "foo", 80, strict, disable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			snap := model.NewSnapshot(&model.Config{PeerAuthentications: tt.pas})
			got := peerAuthnFor(snap, tt.ns, map[string]string{"app": "httpbin", "version": "v1"})
			if m := got.portMode(tt.port); m != tt.want {
				t.Errorf("port %d: mode %s, want %s", tt.port, m, tt.want)
			}
			if m := got.portMode(9999); m != tt.other {
				t.Errorf("port 9999: mode %s, want %s", m, tt.other)
			}
		})
	}
}
