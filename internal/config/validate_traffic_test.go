package config

import (
	"strings"
	"testing"
)

// vsWith is a VirtualService for reviews whose first http entry is entry,
// indented as under "  - ". Its first line is line 8 of the document.
func vsWith(entry string) string {
	return "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews, namespace: default}\nspec:\n  hosts: [reviews]\n  http:\n  - name: r\n" + entry
}

// drWith is a DestinationRule for reviews with the given trafficPolicy
// body; its first line is line 6 of the document.
func drWith(policy string) string {
	return "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews, namespace: default}\nspec:\n  host: reviews\n  trafficPolicy:\n" + policy
}

// TestTrafficFeatureValidationNamesLineAndField has one case per rule for
// the routing features Trellis translates (redirect, rewrite, retries,
// fault, mirroring, CORS, load balancing): each document holds exactly one
// problem, reported with its line, resource and field path as Istio's
// validation would reject it.
func TestTrafficFeatureValidationNamesLineAndField(t *testing.T) {
	const dest = "    route:\n    - destination: {host: reviews}\n"
	tests := []struct {
		name, yaml, want string
	}{
		{"redirect and route", vsWith("    redirect: {uri: /v2}\n" + dest),
			"7: VirtualService default/reviews: spec.http[0]: set only one of route, redirect, directResponse or delegate"},
		{"redirect changing nothing", vsWith("    redirect: {redirectCode: 302}\n"),
			"8: VirtualService default/reviews: spec.http[0].redirect: set at least one of uri, authority, scheme, port or derivePort"},
		{"redirect code Envoy cannot send", vsWith("    redirect: {uri: /v2, redirectCode: 305}\n"),
			"8: VirtualService default/reviews: spec.http[0].redirect.redirectCode: must be 301, 302, 303, 307 or 308 (what Envoy can send), got 305"},
		{"redirect with fault", vsWith("    redirect: {uri: /v2}\n    fault: {abort: {httpStatus: 500}}\n"),
			"9: VirtualService default/reviews: spec.http[0].fault: cannot be combined with redirect"},
		{"redirect port and derivePort", vsWith("    redirect: {port: 8080, derivePort: FROM_REQUEST_PORT}\n"),
			"8: VirtualService default/reviews: spec.http[0].redirect: set only one of port, derivePort; got port and derivePort"},
		{"direct response status", vsWith("    directResponse: {status: 99}\n"),
			"8: VirtualService default/reviews: spec.http[0].directResponse.status: must be between 200 and 599, got 99"},
		{"direct response with rewrite", vsWith("    directResponse: {status: 503}\n    rewrite: {uri: /}\n"),
			"9: VirtualService default/reviews: spec.http[0].rewrite: cannot be combined with directResponse"},
		{"rewrite of nothing", vsWith("    rewrite: {}\n" + dest),
			"8: VirtualService default/reviews: spec.http[0].rewrite: set at least one of uri, authority or uriRegexRewrite"},
		{"rewrite uri and regex", vsWith("    rewrite: {uri: /a, uriRegexRewrite: {match: ^/b, rewrite: /c}}\n" + dest),
			"8: VirtualService default/reviews: spec.http[0].rewrite: set uri or uriRegexRewrite, not both"},
		{"rewrite bad regex", vsWith("    rewrite: {uriRegexRewrite: {match: '(', rewrite: /c}}\n" + dest),
			"8: VirtualService default/reviews: spec.http[0].rewrite.uriRegexRewrite.match: invalid RE2 regex: missing closing ): `(`"},
		{"prefix rewrite of a regex match", vsWith("    match: [{uri: {regex: '^/a.*'}}]\n    rewrite: {uri: /b}\n" + dest),
			"9: VirtualService default/reviews: spec.http[0].rewrite.uri: cannot rewrite the prefix of a regex match (match[0].uri.regex); use uriRegexRewrite"},
		{"negative retry attempts", vsWith("    retries: {attempts: -1}\n" + dest),
			"8: VirtualService default/reviews: spec.http[0].retries.attempts: must not be negative, got -1"},
		{"per-try timeout too short", vsWith("    retries: {attempts: 2, perTryTimeout: 100us}\n" + dest),
			"8: VirtualService default/reviews: spec.http[0].retries.perTryTimeout: must be at least 1ms, got 100µs"},
		{"negative per-try timeout", vsWith("    retries: {attempts: 2, perTryTimeout: -1s}\n" + dest),
			"8: VirtualService default/reviews: spec.http[0].retries.perTryTimeout: must be at least 1ms, got -1s"},
		{"unknown retry condition", vsWith("    retries: {attempts: 2, retryOn: 'connect-failure,5xxx'}\n" + dest),
			`8: VirtualService default/reviews: spec.http[0].retries.retryOn: unknown retry condition "5xxx"; want Envoy's (5xx, gateway-error, connect-failure, ...) or a status code`},
		{"retry status out of range", vsWith("    retries: {attempts: 2, retryOn: '5xx,999'}\n" + dest),
			`8: VirtualService default/reviews: spec.http[0].retries.retryOn: "999" is not an HTTP status code`},
		{"fault percentage above 100", vsWith("    fault: {delay: {fixedDelay: 7s, percentage: {value: 100.5}}}\n" + dest),
			"8: VirtualService default/reviews: spec.http[0].fault.delay.percentage.value: must be between 0 and 100, got 100.5"},
		{"negative abort percentage", vsWith("    fault: {abort: {httpStatus: 500, percentage: {value: -1}}}\n" + dest),
			"8: VirtualService default/reviews: spec.http[0].fault.abort.percentage.value: must be between 0 and 100, got -1"},
		{"negative fixed delay", vsWith("    fault: {delay: {fixedDelay: -2s, percentage: {value: 10}}}\n" + dest),
			"8: VirtualService default/reviews: spec.http[0].fault.delay.fixedDelay: must be at least 1ms, got -2s"},
		{"abort status", vsWith("    fault: {abort: {httpStatus: 600}}\n" + dest),
			"8: VirtualService default/reviews: spec.http[0].fault.abort.httpStatus: must be between 200 and 599, got 600"},
		{"abort gRPC status", vsWith("    fault: {abort: {grpcStatus: UNAVAILABLE_}}\n" + dest),
			`8: VirtualService default/reviews: spec.http[0].fault.abort.grpcStatus: unknown gRPC status "UNAVAILABLE_"; want e.g. UNAVAILABLE, DEADLINE_EXCEEDED, INTERNAL`},
		{"exponential delay", vsWith("    fault: {delay: {exponentialDelay: 1s}}\n" + dest),
			"8: VirtualService default/reviews: spec.http[0].fault.delay.exponentialDelay: not supported (by Istio either); use fixedDelay"},
		{"mirror percentage", vsWith(dest + "    mirror: {host: reviews, subset: v2}\n    mirrorPercentage: {value: 101}\n"),
			"11: VirtualService default/reviews: spec.http[0].mirrorPercentage.value: must be between 0 and 100, got 101"},
		{"mirror and mirrors", vsWith(dest + "    mirror: {host: reviews}\n    mirrors: [{destination: {host: reviews}}]\n"),
			"11: VirtualService default/reviews: spec.http[0].mirrors: set mirror or mirrors, not both"},
		{"mirrors percentage", vsWith(dest + "    mirrors: [{destination: {host: reviews}, percentage: {value: 150}}]\n"),
			"10: VirtualService default/reviews: spec.http[0].mirrors[0].percentage.value: must be between 0 and 100, got 150"},
		{"CORS origin regex", vsWith(dest + "    corsPolicy: {allowOrigins: [{regex: '*.example.com'}]}\n"),
			"10: VirtualService default/reviews: spec.http[0].corsPolicy.allowOrigins[0].regex: invalid RE2 regex: missing argument to repetition operator: `*`"},
		{"CORS method", vsWith(dest + "    corsPolicy: {allowOrigins: [{exact: 'https://a.example'}], allowMethods: [GETT]}\n"),
			`10: VirtualService default/reviews: spec.http[0].corsPolicy.allowMethods[0]: "GETT" is not an HTTP method`},
		{"CORS max age", vsWith(dest + "    corsPolicy: {allowOrigins: [{exact: 'https://a.example'}], maxAge: 1500ms}\n"),
			"10: VirtualService default/reviews: spec.http[0].corsPolicy.maxAge: 1.5s: CORS max-age is whole seconds"},
		{"Maglev table not prime", drWith("    loadBalancer: {consistentHash: {httpHeaderName: x-user, maglev: {tableSize: 1000}}}\n"),
			"7: DestinationRule default/reviews: spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize: must be a prime number below 5000011, got 1000"},
		{"ring too large", drWith("    loadBalancer: {consistentHash: {useSourceIp: true, ringHash: {minimumRingSize: 10000000}}}\n"),
			"7: DestinationRule default/reviews: spec.trafficPolicy.loadBalancer.consistentHash.ringHash.minimumRingSize: must be at most 8388608, got 10000000"},
		{"empty hash header", drWith("    loadBalancer: {consistentHash: {httpHeaderName: ''}}\n"),
			"7: DestinationRule default/reviews: spec.trafficPolicy.loadBalancer.consistentHash.httpHeaderName: must not be empty"},
		{"locality weights", drWith("    loadBalancer:\n      localityLbSetting:\n        distribute:\n        - from: us-west/zone1/*\n          to: {us-west/zone1/*: 80, us-west/zone2/*: 10}\n"),
			"11: DestinationRule default/reviews: spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to: weights must sum to 100, got 90"},
		{"locality failover to itself", drWith("    loadBalancer:\n      localityLbSetting:\n        failover: [{from: us-east, to: us-east}]\n"),
			`9: DestinationRule default/reviews: spec.trafficPolicy.loadBalancer.localityLbSetting.failover[0]: from and to must be different regions, got "us-east" twice`},
		{"negative max connections", drWith("    connectionPool: {tcp: {maxConnections: -1}}\n"),
			"7: DestinationRule default/reviews: spec.trafficPolicy.connectionPool.tcp.maxConnections: must not be negative, got -1"},
		{"outlier interval", drWith("    outlierDetection: {consecutive5xxErrors: 1, interval: 0s}\n"),
			"7: DestinationRule default/reviews: spec.trafficPolicy.outlierDetection.interval: must be at least 1ms, got 0s"},
		{"ejection percent", drWith("    outlierDetection: {consecutive5xxErrors: 1, maxEjectionPercent: 120}\n"),
			"7: DestinationRule default/reviews: spec.trafficPolicy.outlierDetection.maxEjectionPercent: must be between 0 and 100, got 120"},
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

// TestTrafficFeaturesIstioDocumentsAreValid loads Istio's own examples of
// each translated feature; none may be rejected.
func TestTrafficFeaturesIstioDocumentsAreValid(t *testing.T) {
	const dest = "    route:\n    - destination: {host: reviews}\n"
	for _, doc := range []string{
		vsWith("    redirect: {uri: /v1/bookRatings, authority: newratings.default.svc.cluster.local}\n"),
		vsWith("    redirect: {scheme: https, derivePort: FROM_PROTOCOL_DEFAULT, redirectCode: 308}\n"),
		vsWith("    directResponse: {status: 503, body: {string: unavailable}}\n"),
		vsWith("    rewrite: {uri: /newcatalog, authority: catalog.internal}\n" + dest),
		vsWith("    rewrite: {uriRegexRewrite: {match: '^/service/([^/]+)(/.*)$', rewrite: '\\2/instance/\\1'}}\n" + dest),
		vsWith("    retries: {attempts: 3, perTryTimeout: 2s, retryOn: 'gateway-error,connect-failure,refused-stream,503'}\n" + dest),
		vsWith("    fault: {delay: {fixedDelay: 7s, percentage: {value: 0.1}}, abort: {grpcStatus: UNAVAILABLE, percentage: {value: 50}}}\n" + dest),
		vsWith(dest + "    mirror: {host: reviews, subset: v2}\n    mirrorPercentage: {value: 100.0}\n"),
		vsWith(dest + "    corsPolicy: {allowOrigins: [{exact: 'https://example.com'}, {regex: 'https://.*\\.example\\.com'}], allowMethods: [POST, GET], allowCredentials: false, allowHeaders: [X-Foo-Bar], maxAge: 24h}\n"),
		drWith("    loadBalancer: {consistentHash: {httpCookie: {name: user, ttl: 0s}}}\n"),
		drWith("    loadBalancer: {consistentHash: {httpQueryParameterName: id, maglev: {tableSize: 65537}}}\n"),
		drWith("    connectionPool: {tcp: {maxConnections: 1}, http: {http1MaxPendingRequests: 1, maxRequestsPerConnection: 1}}\n    outlierDetection: {consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 3m, maxEjectionPercent: 100}\n"),
		drWith("    loadBalancer:\n      simple: ROUND_ROBIN\n      localityLbSetting:\n        enabled: true\n        failover: [{from: region1, to: region2}]\n    outlierDetection: {consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 1m}\n"),
	} {
		if p := parseFile("ok.yaml", []byte(doc)); len(p.errs) > 0 || len(p.docs) != 1 {
			t.Errorf("%s\nrejected: %v", doc, p.errs)
		}
	}
}
