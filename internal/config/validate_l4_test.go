package config

import (
	"strings"
	"testing"
)

// TestL4RouteValidationNamesLineAndField covers the rules for VirtualService tcp and tls routes:
// each document holds one problem, reported with its line and path.
func TestL4RouteValidationNamesLineAndField(t *testing.T) {
	const vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: ext, namespace: default}\nspec:\n  hosts: [edition.cnn.com]\n"
	tests := []struct{ name, yaml, want string }{
		{"sni host outside the hosts", vs + "  tls:\n  - match:\n    - sniHosts: [www.google.com]\n    route:\n    - destination: {host: edition.cnn.com}\n",
			`8: VirtualService default/ext: spec.tls[0].match[0].sniHosts[0]: "www.google.com" is not a compatible subset of any of the VirtualService hosts [edition.cnn.com]`},
		{"sni host wildcard only", vs + "  tls:\n  - match:\n    - sniHosts: ['*']\n    route:\n    - destination: {host: edition.cnn.com}\n",
			`8: VirtualService default/ext: spec.tls[0].match[0].sniHosts[0]: "*" is not a valid SNI host name`},
		{"destination subnet not a CIDR", vs + "  tcp:\n  - match:\n    - destinationSubnets: [10.0.0.0/33]\n    route:\n    - destination: {host: edition.cnn.com}\n",
			`8: VirtualService default/ext: spec.tcp[0].match[0].destinationSubnets[0]: "10.0.0.0/33" is not an IP address or CIDR`},
		{"tcp weights", vs + "  tcp:\n  - route:\n    - destination: {host: edition.cnn.com, subset: v1}\n      weight: 80\n    - destination: {host: edition.cnn.com, subset: v2}\n      weight: 10\n",
			`11: VirtualService default/ext: spec.tcp[0].route[1].weight: weights must sum to 100, got 90`},
		{"match gateway name", vs + "  tcp:\n  - match:\n    - gateways: [Bad_Name]\n    route:\n    - destination: {host: edition.cnn.com}\n",
			`8: VirtualService default/ext: spec.tcp[0].match[0].gateways[0]: ` + gatewayRefProblem("Bad_Name")},
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

// TestL4RouteIstioDocumentsAreValid loads Istio's own tcp/tls examples; none may be rejected.
func TestL4RouteIstioDocumentsAreValid(t *testing.T) {
	docs := []string{
		// TCP traffic shifting.
		"apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: tcp-echo, namespace: default}\nspec:\n  hosts: [tcp-echo]\n  tcp:\n  - match:\n    - port: 9000\n    route:\n    - destination: {host: tcp-echo, port: {number: 9000}, subset: v1}\n      weight: 80\n    - destination: {host: tcp-echo, port: {number: 9000}, subset: v2}\n      weight: 20\n",
		// Egress TLS passthrough, and a wildcard host.
		"apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: cnn, namespace: default}\nspec:\n  hosts: ['*.cnn.com']\n  tls:\n  - match:\n    - port: 443\n      sniHosts: [edition.cnn.com]\n    route:\n    - destination: {host: edition.cnn.com, port: {number: 443}}\n",
		// A short host covers its FQDN as SNI.
		"apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: nginx, namespace: default}\nspec:\n  hosts: [my-nginx]\n  tls:\n  - match:\n    - sniHosts: [my-nginx.default.svc.cluster.local]\n    route:\n    - destination: {host: my-nginx}\n",
		// Ingress TLS passthrough.
		"apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: mygateway, namespace: default}\nspec:\n  selector: {istio: ingressgateway}\n  servers:\n  - port: {number: 443, name: https, protocol: TLS}\n    tls: {mode: PASSTHROUGH}\n    hosts: [nginx.example.com]\n",
	}
	for i, d := range docs {
		p := parseFile("ok.yaml", []byte(d))
		if len(p.errs) != 0 || len(p.docs) != 1 {
			t.Errorf("document %d: errors %v", i, p.errs)
		}
	}
}
