package config

import (
	"path/filepath"
	"strings"
	"testing"
)

const telemetryMesh = `enableTracing: true
defaultConfig:
  tracing: {sampling: 10}
extensionProviders:
- name: otel
  opentelemetry: {service: otel-collector.observability.svc.cluster.local, port: 4317}
- name: zipkin
  zipkin: {service: zipkin.istio-system.svc.cluster.local, port: 9411}
- name: json-file
  envoyFileAccessLog: {path: /tmp/access.log, logFormat: {labels: {code: "%RESPONSE_CODE%"}}}
- name: authz
  envoyExtAuthzHttp: {service: authz.default.svc.cluster.local, port: 8000}
defaultProviders:
  tracing: [otel]
accessLogFile: /dev/stdout
accessLogEncoding: JSON
`

func TestTelemetryV1AndV1alpha1LoadIntoTheConfig(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "mesh.yaml"), telemetryMesh)
	writeFile(t, filepath.Join(dir, "t.yaml"), `apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  tracing:
  - providers: [{name: zipkin}]
    randomSamplingPercentage: 100
    customTags:
      team: {literal: {value: payments}}
      tenant: {header: {name: x-tenant, defaultValue: none}}
  accessLogging:
  - providers: [{name: envoy}, {name: json-file}]
---
apiVersion: telemetry.istio.io/v1alpha1
kind: Telemetry
metadata: {name: reviews, namespace: default}
spec:
  selector: {matchLabels: {app: reviews}}
  tracing: [{disableSpanReporting: true}]
  accessLogging: [{disabled: true}]
`)
	cfg, _, err := LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Telemetries) != 2 || cfg.Telemetries[0].Name != "reviews" || cfg.Telemetries[1].Spec.GetTracing()[0].GetRandomSamplingPercentage().GetValue() != 100 {
		t.Fatalf("got %+v", cfg.Telemetries)
	}
	if !cfg.Mesh.GetEnableTracing() || cfg.Mesh.GetDefaultConfig().GetTracing().GetSampling() != 10 || len(cfg.Mesh.GetExtensionProviders()) != 4 {
		t.Fatalf("mesh %v", cfg.Mesh)
	}
}

func TestInvalidTelemetryReportsFileLineAndFieldPath(t *testing.T) {
	for _, tc := range []struct {
		name, doc, want string
	}{
		{"cel filter", `spec:
  accessLogging:
  - providers: [{name: envoy}]
    filter: {expression: "response.code >= 400"}`, `9: Telemetry default/t: spec.accessLogging[0].filter.expression: CEL filter expressions are not supported by Trellis; remove the filter`},
		{"unknown provider", `spec:
  tracing:
  - providers: [{name: jaeger}]`, `8: Telemetry default/t: spec.tracing[0].providers[0].name: provider "jaeger" is not defined in the mesh config's extensionProviders`},
		{"wrong kind of provider", `spec:
  tracing:
  - providers: [{name: authz}]`, `provider "authz" is a envoyExtAuthzHttp provider; Trellis traces with opentelemetry and zipkin providers`},
		{"log provider for tracing", `spec:
  tracing:
  - providers: [{name: json-file}]`, `spec.tracing[0].providers[0].name: provider "json-file" is a envoyFileAccessLog provider`},
		{"sampling range", `spec:
  tracing:
  - randomSamplingPercentage: 150`, `8: Telemetry default/t: spec.tracing[0].randomSamplingPercentage: must be between 0 and 100, got 150`},
		{"targetRefs", `spec:
  targetRefs: [{kind: Service, group: "", name: reviews}]`, `spec.targetRefs: not supported by Trellis`},
		{"metrics", `spec:
  metrics: [{providers: [{name: prometheus}]}]`, `spec.metrics: not supported by Trellis`},
		{"client mode", `spec:
  tracing:
  - match: {mode: CLIENT}`, `spec.tracing[0].match.mode: CLIENT is not supported by Trellis`},
		{"formatter tag", `spec:
  tracing:
  - customTags:
      x: {formatter: {value: "%REQ(x)%"}}`, `spec.tracing[0].customTags[x].formatter: not supported by Trellis`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFile(t, filepath.Join(dir, "mesh.yaml"), telemetryMesh)
			writeFile(t, filepath.Join(dir, "t.yaml"), "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata:\n  name: t\n  namespace: default\n"+tc.doc+"\n")
			_, _, err := LoadDir(dir)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
}

func TestInvalidMeshTelemetryReportsLineAndField(t *testing.T) {
	for _, tc := range []struct{ mesh, want string }{
		{"extensionProviders:\n- name: z\n  zipkin: {service: zipkin.default.svc.cluster.local}\n", `mesh.yaml:3: MeshConfig: extensionProviders[0].zipkin.port: must be between 1 and 65535, got 0`},
		{"extensionProviders:\n- name: o\n  opentelemetry: {service: o.default.svc.cluster.local, port: 4317, http: {path: /v1/traces}}\n", `extensionProviders[0].opentelemetry.http: not supported by Trellis`},
		{"defaultProviders: {tracing: [nope]}\n", `mesh.yaml:1: MeshConfig: defaultProviders.tracing[0]: provider "nope" is not defined`},
		{"defaultConfig: {tracing: {sampling: 101}}\n", `defaultConfig.tracing.sampling: must be between 0 and 100, got 101`},
		{"extensionProviders:\n- name: f\n  envoyFileAccessLog: {}\n", `extensionProviders[0].envoyFileAccessLog.path: required`},
	} {
		dir := t.TempDir()
		writeFile(t, filepath.Join(dir, "mesh.yaml"), tc.mesh)
		_, _, err := LoadDir(dir)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("mesh %q: got %v, want %q", tc.mesh, err, tc.want)
		}
	}
}
