package apphealth

import (
	"reflect"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
)

// FuzzProxyConfig feeds arbitrary bytes to the PROXY_CONFIG parser, which reads an environment
// variable a VM's operator (or a template) wrote: a bad document is an error, never a panic; a
// probe it accepts is valid and runnable; and the metadata it sends, read back, gives the same
// probe, so the control plane and the proxy agree on what is checked. The seed corpus is
// testdata/fuzz/FuzzProxyConfig.
func FuzzProxyConfig(f *testing.F) {
	for _, seed := range []string{
		"",
		"readinessProbe: {httpGet: {path: /ready, port: 9080}}",
		`{"readinessProbe": {"tcpSocket": {"port": 3306}, "failureThreshold": 3}}`,
		"readiness_probe: {exec: {command: [sh, -c, 'exit 0']}}",
		"readinessProbe: {grpc: {port: 50051, service: reviews}}\nproxyMetadata: {ISTIO_META_DNS_CAPTURE: 'true'}",
		"readinessProbe: {httpGet: {port: 0}}",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := ParseProxyConfig(data)
		if err != nil {
			return
		}
		if cfg.Metadata == nil {
			t.Fatal("accepted without metadata")
		}
		_, sent := cfg.Metadata.GetFields()[probeKey]
		if p := cfg.ReadinessProbe; p == nil {
			if sent {
				t.Fatal("no probe, yet the metadata turns health checking on")
			}
			return
		}
		if !sent {
			t.Fatal("a probe the control plane is not told about")
		}
		if err := cfg.ReadinessProbe.Validate(); err != nil {
			t.Fatalf("accepted probe does not validate: %v", err)
		}
		if _, err := New(Config{Probe: cfg.ReadinessProbe, Report: func(bool, string) {}}); err != nil {
			t.Fatalf("accepted probe does not run: %v", err)
		}
		js, err := protojson.Marshal(cfg.Metadata)
		if err != nil {
			t.Fatalf("metadata does not marshal: %v", err)
		}
		again, err := ParseProxyConfig(js)
		if err != nil {
			t.Fatalf("the metadata sent does not parse back: %v\n%s", err, js)
		}
		if !reflect.DeepEqual(again.ReadinessProbe, cfg.ReadinessProbe) {
			t.Fatalf("probe read back %+v, want %+v", again.ReadinessProbe, cfg.ReadinessProbe)
		}
	})
}
