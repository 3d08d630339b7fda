package config

import (
	"errors"
	"path/filepath"
	"testing"
)

// TestInvalidResourceReportsFileLineKindFieldAndReason has one case per
// validation rule; each testdata file holds exactly one problem.
func TestInvalidResourceReportsFileLineKindFieldAndReason(t *testing.T) {
	tests := []struct {
		file string
		want string
	}{
		// Parsing.
		{"yaml-syntax.yaml", `6: invalid YAML: did not find expected ',' or ']'`},
		{"not-a-mapping.yaml", `1: a resource must be a mapping with apiVersion, kind, metadata and spec, got a list`},
		{"kind-missing.yaml", `1: kind: required; every document needs apiVersion and kind (only mesh.yaml holds a bare MeshConfig)`},
		{"kind-unknown.yaml", `2: VirtualServce default/reviews: kind: unknown kind "VirtualServce" (apiVersion "networking.istio.io/v1"); did you mean VirtualService?`},
		{"api-version.yaml", `1: VirtualService default/reviews: apiVersion: "networking.istio.io/v2" is not served for VirtualService; want networking.istio.io/v1, v1beta1, v1alpha3`},
		{"top-level-field.yaml", `5: WorkloadEntry default/reviews-v1: specs: unknown field; a resource has apiVersion, kind, metadata and spec; did you mean spec?`},
		{"duplicate-key.yaml", `7: WorkloadEntry default/reviews-v1: spec.address: duplicate key (first at line 6)`},
		{"vs-unknown-field.yaml", `8: VirtualService default/reviews: spec.http[0].rout: unknown field; did you mean route?`},
		{"vs-wrong-type.yaml", `10: VirtualService default/reviews: spec.http[0].route[0].weight: must be an integer, got "half"`},
		{"vs-timeout.yaml", `10: VirtualService default/reviews: spec.http[0].timeout: invalid duration "5 seconds": want e.g. 5s, 100ms, 1m`},
		{"se-enum.yaml", `7: ServiceEntry default/ratings: spec.resolution: unknown value "STATC"; want one of NONE, STATIC, DNS, DNS_ROUND_ROBIN, DYNAMIC_DNS`},
		{"dr-enum.yaml", `9: DestinationRule default/reviews: spec.trafficPolicy.loadBalancer.simple: unknown value "ROUND_ROBINN"; want one of UNSPECIFIED, LEAST_CONN, RANDOM, PASSTHROUGH, ROUND_ROBIN, LEAST_REQUEST`},
		{"dr-oneof.yaml", `10: DestinationRule default/reviews: spec.trafficPolicy.loadBalancer: set only one of simple, consistentHash; got simple and consistentHash`},
		{"we-port-negative.yaml", `8: WorkloadEntry default/reviews-v1: spec.ports[http]: must not be negative, got -1`},
		// Metadata.
		{"meta-name.yaml", `3: WorkloadEntry: metadata.name: required`},
		{"meta-name-invalid.yaml", `4: WorkloadEntry default/Reviews_V1: metadata.name: "Reviews_V1" is not a valid name: use lower-case letters, digits, '-' and '.', starting and ending with a letter or digit`},
		{"meta-duplicate.yaml", `11: WorkloadEntry default/reviews-v1: metadata.name: duplicate WorkloadEntry default/reviews-v1; first defined at testdata/invalid/meta-duplicate.yaml:1`},
		// VirtualService.
		{"vs-hosts-empty.yaml", `6: VirtualService default/reviews: spec.gateways: a delegate VirtualService (no hosts) must not list gateways; its root's apply`},
		{"vs-exportto.yaml", `7: VirtualService default/reviews: spec.exportTo[1]: "~" cannot be combined with other entries`},
		{"se-exportto.yaml", `6: ServiceEntry default/ratings: spec.exportTo[0]: "Other_NS": want ".", "*", "~" or a namespace name`},
		{"dr-exportto.yaml", `6: DestinationRule default/reviews: spec.exportTo[1]: duplicate entry "." (also spec.exportTo[0])`},
		{"vs-delegate-nested.yaml", `7: VirtualService default/reviews-delegate: spec.http[0].delegate: a delegate VirtualService (no hosts) cannot delegate again`},
		{"vs-no-routes.yaml", `5: VirtualService default/front: spec: at least one of http, tcp or tls routes is required`},
		{"vs-no-destination.yaml", `8: VirtualService default/reviews: spec.http[0].route: at least one route destination is required (or a redirect or directResponse)`},
		{"vs-redirect-and-route.yaml", `8: VirtualService default/reviews: spec.http[0]: set only one of route, redirect, directResponse or delegate`},
		{"vs-destination-host.yaml", `9: VirtualService default/reviews: spec.http[0].route[0].destination.host: required`},
		{"vs-weight-range.yaml", `11: VirtualService default/reviews: spec.http[0].route[0].weight: must be between 0 and 100, got 150`},
		{"vs-weight-sum.yaml", `18: VirtualService default/reviews: spec.http[0].route[1].weight: weights must sum to 100, got 110`},
		{"vs-stringmatch-empty.yaml", `10: VirtualService default/reviews: spec.http[0].match[1].uri: set exactly one of exact, prefix or regex`},
		{"vs-stringmatch-two.yaml", `11: VirtualService default/reviews: spec.http[0].match[0].uri: set only one of exact, prefix, regex; got exact and prefix`},
		{"vs-regex.yaml", "11: VirtualService default/reviews: spec.http[0].match[0].headers[x-user].regex: invalid RE2 regex: missing closing ): `(unclosed`"},
		{"vs-regex-lookahead.yaml", "10: VirtualService default/reviews: spec.http[0].match[0].uri.regex: invalid RE2 regex: invalid or unsupported Perl syntax: `(?!`"},
		{"vs-gateway-ref.yaml", `9: VirtualService default/front: spec.gateways[1]: "istio-system/ingress/extra": want mesh, <gateway> or <namespace>/<gateway>`},
		{"vs-wildcard-mesh.yaml", `6: VirtualService default/front: spec.hosts[0]: wildcard host "*" is not allowed for a VirtualService bound to the mesh; bind it to a gateway`},
		// DestinationRule.
		{"dr-host.yaml", `5: DestinationRule default/reviews: spec.host: required`},
		{"dr-subset-name.yaml", `8: DestinationRule default/reviews: spec.subsets[0].name: required`},
		{"dr-subset-duplicate.yaml", `10: DestinationRule default/reviews: spec.subsets[1].name: duplicate subset "v1" (also spec.subsets[0])`},
		{"dr-subset-labels.yaml", `8: DestinationRule default/reviews: spec.subsets[0].labels: at least one label is required to select the subset's endpoints`},
		// ServiceEntry.
		{"se-hosts.yaml", `5: ServiceEntry default/ratings: spec.hosts: at least one host is required`},
		{"se-port-number.yaml", `9: ServiceEntry default/ratings: spec.ports[0].number: must be between 1 and 65535, got 70000`},
		{"se-port-duplicate.yaml", `10: ServiceEntry default/ratings: spec.ports[1].number: duplicate port 9080 (also spec.ports[0])`},
		{"se-port-name.yaml", `9: ServiceEntry default/ratings: spec.ports[0].name: required`},
		{"se-port-protocol.yaml", `11: ServiceEntry default/ratings: spec.ports[0].protocol: unknown protocol "HTTP3"; want one of HTTP, HTTPS, HTTP2, GRPC, GRPC-WEB, TCP, TLS, MONGO, REDIS, MYSQL`},
		{"se-endpoint-address.yaml", `11: ServiceEntry default/ratings: spec.endpoints[0].address: required`},
		{"se-static-hostname.yaml", `11: ServiceEntry default/ratings: spec.endpoints[0].address: "ratings.internal" is not an IP address; resolution STATIC needs IPs (or use resolution DNS)`},
		{"se-selector-and-endpoints.yaml", `10: ServiceEntry default/ratings: spec.workloadSelector: set workloadSelector or endpoints, not both`},
		{"se-static-no-endpoints.yaml", `5: ServiceEntry default/ratings: spec.endpoints: resolution STATIC needs endpoints or a workloadSelector`},
		{"se-duplicate-host.yaml", `20: ServiceEntry default/ratings-v2: spec.hosts[1]: host "ratings.default.svc.cluster.local" is already declared by ServiceEntry default/ratings (testdata/invalid/se-duplicate-host.yaml:1)`},
		// WorkloadEntry.
		{"we-address.yaml", `5: WorkloadEntry default/reviews-v1: spec.address: required`},
		{"we-address-invalid.yaml", `6: WorkloadEntry default/reviews-v1: spec.address: "127.0.1.300:9080" is not an IP address or host name`},
		{"we-port.yaml", `8: WorkloadEntry default/reviews-v1: spec.ports[http]: must be between 1 and 65535, got 0`},
		// Gateway.
		{"gw-servers.yaml", `6: Gateway istio-system/ingress: spec.servers: at least one server is required`},
		{"gw-port.yaml", `8: Gateway istio-system/ingress: spec.servers[0].port: required`},
		{"gw-hosts.yaml", `8: Gateway istio-system/ingress: spec.servers[0].hosts: at least one host is required`},
		// Sidecar.
		{"sc-ingress-port.yaml", `7: Sidecar default/reviews: spec.ingress[0].port: required`},
		{"sc-default-endpoint.yaml", `8: Sidecar default/reviews: spec.ingress[0].defaultEndpoint: "10.0.0.1:19081": want 127.0.0.1:<port>, 0.0.0.0:<port>, [::1]:<port>, [::]:<port> or unix:///<path>`},
		{"sc-egress-host.yaml", `9: Sidecar default/reviews: spec.egress[0].hosts[1]: "reviews.default.svc.cluster.local": want namespace/host, e.g. ./* or istio-system/*`},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			path := filepath.Join("testdata", "invalid", tt.file)
			cfg, _, err := loadFiles([]configFile{{path: path}})
			if cfg != nil {
				t.Errorf("got a config; want nil so the caller keeps its last good one")
			}
			if err == nil {
				t.Fatalf("got no error; want %s:%s", path, tt.want)
			}
			if got, want := err.Error(), path+":"+tt.want; got != want {
				t.Errorf("error:\n got %s\nwant %s", got, want)
			}
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Errorf("error %T is not a *ValidationError", err)
			}
		})
	}
}

func TestInvalidMeshConfigReportsField(t *testing.T) {
	_, _, err := LoadDir(filepath.Join("testdata", "invalid", "mesh"))
	want := "testdata/invalid/mesh/mesh.yaml:3: MeshConfig: defaultConfig.proxyAdminPrt: unknown field; did you mean proxyAdminPort?"
	if err == nil || err.Error() != want {
		t.Fatalf("error:\n got %v\nwant %s", err, want)
	}
}

// TestFileWithManyProblemsReportsThemAll: a user fixing a file should see
// every problem at once, in line order, not one per save.
func TestFileWithManyProblemsReportsThemAll(t *testing.T) {
	path := filepath.Join("testdata", "multi-error.yaml")
	cfg, _, err := loadFiles([]configFile{{path: path}})
	if cfg != nil || err == nil {
		t.Fatalf("got cfg %v, err %v; want nil config and errors", cfg, err)
	}
	// A document with structural errors (unknown fields, wrong types) is
	// not checked further, so the out-of-range port at line 43 is not
	// reported: its rules would run on a half-read spec.
	want := []string{
		path + ":13: VirtualService default/reviews: spec.http[0].route[1].destination.host: required",
		path + ":14: VirtualService default/reviews: spec.http[0].route[1].weight: weights must sum to 100, got 120",
		path + ":17: VirtualService default/reviews: spec.http[1].match[0].uri.regex: invalid RE2 regex: missing argument to repetition operator: `*`",
		path + ":30: DestinationRule default/reviews: spec.subsets[1].name: duplicate subset \"v1\" (also spec.subsets[0])",
		path + ":30: DestinationRule default/reviews: spec.subsets[1].labels: at least one label is required to select the subset's endpoints",
		path + ":32: kind: required; every document needs apiVersion and kind (only mesh.yaml holds a bare MeshConfig)",
		path + ":41: WorkloadEntry default/reviews-v1: spec.adress: unknown field; did you mean address?",
		path + ":44: WorkloadEntry default/reviews-v1: spec.weight: must not be negative, got -3",
	}
	joined, ok := err.(interface{ Unwrap() []error })
	if !ok {
		t.Fatalf("error %T is not an errors.Join", err)
	}
	errs := joined.Unwrap()
	for i := range max(len(errs), len(want)) {
		var got, w string
		if i < len(errs) {
			got = errs[i].Error()
			if _, ok := errs[i].(*ValidationError); !ok {
				t.Errorf("error %d is a %T, want *ValidationError", i, errs[i])
			}
		}
		if i < len(want) {
			w = want[i]
		}
		if got != w {
			t.Errorf("error %d:\n got %s\nwant %s", i, got, w)
		}
	}
}
