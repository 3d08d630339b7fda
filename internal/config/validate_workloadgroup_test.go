package config

import (
	"strings"
	"testing"
)

// A WorkloadGroup is accepted with Istio's rules: a template without an
// address, Kubernetes labels and annotation keys, one probe check.
func TestWorkloadGroupValidation(t *testing.T) {
	const good = `apiVersion: networking.istio.io/v1
kind: WorkloadGroup
metadata: {name: reviews, namespace: bookinfo}
spec:
  metadata:
    labels: {app: reviews, app.kubernetes.io/version: "1.3.4"}
    annotations: {example.com/owner: team-a}
  template:
    ports: {http: 8080}
    serviceAccount: reviews
  probe:
    periodSeconds: 4
    httpGet: {path: /ready, port: 8080}
`
	obj, _, err := ParseObject("test", []byte(good))
	if err != nil || obj == nil {
		t.Fatalf("valid WorkloadGroup: %v", err)
	}
	cfg, _, errs := Assemble(nil, []*Object{obj})
	if len(errs) > 0 || len(cfg.WorkloadGroups) != 1 || cfg.WorkloadGroups[0].Spec.GetTemplate().GetPorts()["http"] != 8080 {
		t.Fatalf("Assemble: %v, groups %v", errs, cfg.WorkloadGroups)
	}

	for _, tc := range []struct{ name, spec, want string }{
		{"no template", "metadata: {labels: {app: x}}", "spec.template: required"},
		{"address in template", "template: {address: 10.0.0.1}", "spec.template.address: must be empty"},
		{"bad port", "template: {ports: {http: 70000}}", "spec.template.ports[http]: must be between 1 and 65535"},
		{"bad label", "metadata: {labels: {'-bad': x}}\n  template: {}", "spec.metadata.labels[-bad]"},
		{"bad annotation", "metadata: {annotations: {'a/b/c': x}}\n  template: {}", "spec.metadata.annotations[a/b/c]"},
		{"probe without check", "template: {}\n  probe: {periodSeconds: 3}", "spec.probe: one of httpGet, tcpSocket, exec or grpc is required"},
		{"negative timeout", "template: {}\n  probe: {timeoutSeconds: -1, tcpSocket: {port: 80}}", "spec.probe.timeoutSeconds: must not be negative"},
		{"empty exec", "template: {}\n  probe: {exec: {command: []}}", "spec.probe.exec.command: required"},
	} {
		doc := "apiVersion: networking.istio.io/v1\nkind: WorkloadGroup\nmetadata: {name: g, namespace: ns}\nspec:\n  " + tc.spec + "\n"
		_, _, err := ParseObject("test", []byte(doc))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.want)
		}
	}
}
