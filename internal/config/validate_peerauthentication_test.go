package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// paWith is a PeerAuthentication in namespace foo with the given spec body;
// its first spec line is line 5 of the document.
func paWith(spec string) string {
	return "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: httpbin, namespace: foo}\nspec:\n" + spec
}

// TestMutualTLSValidationNamesLineAndField has one case per rule for
// PeerAuthentication and DestinationRule tls; each document holds exactly
// one problem.
func TestMutualTLSValidationNamesLineAndField(t *testing.T) {
	tests := []struct {
		name, yaml, want string
	}{
		{"port level without selector", paWith("  mtls: {mode: STRICT}\n  portLevelMtls:\n    8080: {mode: DISABLE}\n"),
			"6: PeerAuthentication foo/httpbin: spec.portLevelMtls: requires a workload selector (as in Istio): ports are the selected workload's"},
		{"port zero", paWith("  selector: {matchLabels: {app: httpbin}}\n  portLevelMtls:\n    0: {mode: DISABLE}\n"),
			"7: PeerAuthentication foo/httpbin: spec.portLevelMtls[0]: port must be between 1 and 65535, got 0"},
		{"empty selector", paWith("  selector: {matchLabels: {}}\n  mtls: {mode: STRICT}\n"),
			"5: PeerAuthentication foo/httpbin: spec.selector.matchLabels: at least one label is required; leave selector out for a namespace-wide policy"},
		{"unknown mode", paWith("  mtls: {mode: STRICTER}\n"),
			`5: PeerAuthentication foo/httpbin: spec.mtls.mode: unknown value "STRICTER"; want one of UNSET, DISABLE, PERMISSIVE, STRICT`},
		{"credentialName", drWith("    tls: {mode: SIMPLE, credentialName: client-secret}\n"),
			"7: DestinationRule default/reviews: spec.trafficPolicy.tls.credentialName: not supported yet: Trellis reads client TLS material from files; use clientCertificate, privateKey and caCertificates"},
		{"MUTUAL without key", drWith("    tls: {mode: MUTUAL, clientCertificate: /etc/certs/client.pem}\n"),
			"7: DestinationRule default/reviews: spec.trafficPolicy.tls.privateKey: required when mode is MUTUAL"},
		{"ISTIO_MUTUAL with files", drWith("    tls: {mode: ISTIO_MUTUAL, caCertificates: /etc/certs/ca.pem}\n"),
			"7: DestinationRule default/reviews: spec.trafficPolicy.tls.caCertificates: must not be set when mode is ISTIO_MUTUAL: the mesh's workload certificate and root are used"},
		{"SIMPLE with client key", drWith("    tls: {mode: SIMPLE, privateKey: /etc/certs/key.pem}\n"),
			"7: DestinationRule default/reviews: spec.trafficPolicy.tls: clientCertificate and privateKey are sent only when mode is MUTUAL"},
		{"skip verify and CA", drWith("    tls: {mode: SIMPLE, caCertificates: /etc/certs/ca.pem, insecureSkipVerify: true}\n"),
			"7: DestinationRule default/reviews: spec.trafficPolicy.tls.insecureSkipVerify: true skips verification; caCertificates and subjectAltNames would be ignored"},
		{"port-level DISABLE with sni", drWith("    portLevelSettings:\n    - port: {number: 9080}\n      tls: {mode: DISABLE, sni: reviews}\n"),
			"9: DestinationRule default/reviews: spec.trafficPolicy.portLevelSettings[0].tls: sni, subjectAltNames and insecureSkipVerify have no effect when mode is DISABLE"},
		{"caCrl", drWith("    tls: {mode: SIMPLE, caCrl: /etc/certs/crl.pem}\n"),
			"7: DestinationRule default/reviews: spec.trafficPolicy.tls.caCrl: not supported by Trellis"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := parseFile("rule.yaml", []byte(tt.yaml))
			if len(p.docs) != 0 || len(p.errs) == 0 {
				t.Fatalf("parsed %d documents with %d errors; want the document rejected", len(p.docs), len(p.errs))
			}
			var got []string
			for _, e := range p.errs {
				got = append(got, e.Error())
			}
			if want := "rule.yaml:" + tt.want; got[0] != want || len(got) > 1 {
				t.Errorf("errors:\n got %s\nwant %s", strings.Join(got, "\n     "), want)
			}
		})
	}
}

// TestMutualTLSIstioDocumentsAreValid loads the PeerAuthentications and
// DestinationRule tls settings of Istio's security tasks; none may be
// rejected.
func TestMutualTLSIstioDocumentsAreValid(t *testing.T) {
	for _, doc := range []string{
		paWith("  mtls: {mode: STRICT}\n"),
		paWith("  mtls: {mode: PERMISSIVE}\n"),
		paWith("  selector: {matchLabels: {app: httpbin}}\n  mtls: {mode: DISABLE}\n"),
		paWith("  selector: {matchLabels: {app: httpbin}}\n  mtls: {mode: STRICT}\n  portLevelMtls:\n    8080: {mode: DISABLE}\n"),
		paWith("  selector: {matchLabels: {app: httpbin}}\n  portLevelMtls:\n    80: {mode: PERMISSIVE}\n"),
		paWith("  {}\n"),
		drWith("    tls: {mode: ISTIO_MUTUAL}\n"),
		drWith("    tls: {mode: DISABLE}\n"),
		drWith("    portLevelSettings:\n    - port: {number: 80}\n      tls: {mode: SIMPLE}\n"),
		drWith("    tls: {mode: SIMPLE, caCertificates: /etc/certs/ca.pem, sni: my-nginx.mesh-external.svc.cluster.local, subjectAltNames: [my-nginx.mesh-external.svc.cluster.local]}\n"),
		drWith("    tls: {mode: MUTUAL, clientCertificate: /etc/certs/client.pem, privateKey: /etc/certs/key.pem, caCertificates: /etc/certs/ca.pem}\n"),
		drWith("    tls: {mode: SIMPLE, insecureSkipVerify: true}\n"),
	} {
		if p := parseFile("ok.yaml", []byte(doc)); len(p.errs) > 0 || len(p.docs) != 1 {
			t.Errorf("%s\nrejected: %v", doc, p.errs)
		}
	}
}

// TestCompetingPeerAuthenticationsAreRefusedWithBothLocations covers the
// rules Istio resolves by creation time: a file-based config has none, so
// Trellis refuses the ambiguity and names both resources.
func TestCompetingPeerAuthenticationsAreRefusedWithBothLocations(t *testing.T) {
	pa := func(name, ns, spec string) string {
		return "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: " + name + ", namespace: " + ns + "}\nspec:\n" + spec + "---\n"
	}
	tests := []struct {
		name, yaml, want string
	}{
		{"two mesh-wide", pa("a", "istio-system", "  mtls: {mode: STRICT}\n") + pa("b", "istio-system", "  mtls: {mode: PERMISSIVE}\n"),
			"pa.yaml:9: PeerAuthentication istio-system/b: metadata.name: only one mesh-wide PeerAuthentication (root namespace istio-system, no selector) is allowed; PeerAuthentication istio-system/a (pa.yaml:1) is one (Istio would silently use the oldest)"},
		{"two namespace-wide", pa("a", "foo", "  mtls: {mode: STRICT}\n") + pa("b", "foo", "  {}\n"),
			"pa.yaml:9: PeerAuthentication foo/b: metadata.name: only one namespace-wide PeerAuthentication (no selector) per namespace is allowed; PeerAuthentication foo/a (pa.yaml:1) is one (Istio would silently use the oldest)"},
		{"same selector", pa("a", "foo", "  selector: {matchLabels: {app: x, v: '1'}}\n") + pa("b", "foo", "  selector: {matchLabels: {v: '1', app: x}}\n"),
			"pa.yaml:11: PeerAuthentication foo/b: spec.selector: another PeerAuthentication in namespace foo has the same selector; PeerAuthentication foo/a (pa.yaml:1) is one (Istio would silently use the oldest)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "pa.yaml"), []byte(tt.yaml), 0o644); err != nil {
				t.Fatal(err)
			}
			cfg, _, err := LoadDir(dir)
			if err == nil {
				t.Fatalf("loaded %d PeerAuthentications; want the conflict refused", len(cfg.PeerAuthentications))
			}
			if got := strings.ReplaceAll(err.Error(), dir+string(filepath.Separator), ""); got != tt.want {
				t.Errorf("error:\n got %s\nwant %s", got, tt.want)
			}
		})
	}
	// One policy per level, in different namespaces, is fine.
	dir := t.TempDir()
	ok := pa("default", "istio-system", "  mtls: {mode: STRICT}\n") + pa("default", "foo", "  mtls: {mode: PERMISSIVE}\n") +
		pa("httpbin", "foo", "  selector: {matchLabels: {app: httpbin}}\n  mtls: {mode: DISABLE}\n")
	if err := os.WriteFile(filepath.Join(dir, "pa.yaml"), []byte(ok), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadDir(dir); err != nil {
		t.Errorf("one policy per level refused: %v", err)
	}
}
