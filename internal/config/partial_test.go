package config

import (
	"os"
	"path/filepath"
	"testing"
)

func TestLoadDirPartialKeepsValidResourcesAndReportsTheRest(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("good.yaml", `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: good, namespace: default}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination:
        host: reviews
`)
	write("bad.yaml", `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bad, namespace: default}
spec:
  hosts: [reviews]
  htp: []
`)
	if _, _, err := LoadDir(dir); err == nil {
		t.Fatal("LoadDir accepted the bad resource; this test needs one it rejects")
	}
	p, err := LoadDirPartial(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Config.VirtualServices) != 1 || p.Config.VirtualServices[0].Name != "good" {
		t.Fatalf("virtual services %v, want only good", p.Config.VirtualServices)
	}
	if len(p.Errors) != 1 || p.Errors[0].Name != "bad" || p.Errors[0].Field != "spec.htp" || p.Errors[0].Source.Line != 6 {
		t.Fatalf("errors %v, want one at bad.yaml:6 spec.htp", p.Errors)
	}
	if got := p.FieldLine("VirtualService default/good", "spec.http[0].route[0].destination.host"); got != 9 {
		t.Errorf("line of the destination host %d, want 9", got)
	}
	if got := p.FieldLine("VirtualService default/bad", "spec"); got != 0 {
		t.Errorf("line in a left-out resource %d, want 0", got)
	}
}
