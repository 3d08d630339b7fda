package apphealth

import (
	"reflect"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
)

func TestProxyConfigProbeIsReadFromYAMLOrJSONAndSentOnAsMetadata(t *testing.T) {
	want := &Probe{
		InitialDelaySeconds: 5, PeriodSeconds: 3, FailureThreshold: 2,
		HTTPGet: &HTTPGet{Path: "/ready", Port: 9080, Scheme: "HTTPS",
			HTTPHeaders: []Header{{Name: "X-Probe", Value: "trellis"}}},
	}
	for name, doc := range map[string]string{
		"yaml": `
discoveryAddress: istiod.istio-system.svc:15012
proxyMetadata: {ISTIO_META_DNS_CAPTURE: "true"}
readinessProbe:
  initialDelaySeconds: 5
  periodSeconds: 3
  failureThreshold: 2
  httpGet:
    path: /ready
    port: 9080
    scheme: HTTPS
    httpHeaders: [{name: X-Probe, value: trellis}]
`,
		"json": `{"discoveryAddress": "istiod.istio-system.svc:15012", "proxyMetadata": {"ISTIO_META_DNS_CAPTURE": "true"},
		  "readinessProbe": {"initialDelaySeconds": 5, "periodSeconds": 3, "failureThreshold": 2,
		    "httpGet": {"path": "/ready", "port": 9080, "scheme": "HTTPS", "httpHeaders": [{"name": "X-Probe", "value": "trellis"}]}}}`,
		// protobuf's JSON parser takes the proto field names too; so does Istio's agent.
		"snake_case": `
discovery_address: istiod.istio-system.svc:15012
proxy_metadata: {ISTIO_META_DNS_CAPTURE: "true"}
readiness_probe:
  initial_delay_seconds: 5
  period_seconds: 3
  failure_threshold: 2
  http_get: {path: /ready, port: 9080, scheme: HTTPS, http_headers: [{name: X-Probe, value: trellis}]}
`,
	} {
		t.Run(name, func(t *testing.T) {
			cfg, err := ParseProxyConfig([]byte(doc))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(cfg.ReadinessProbe, want) {
				t.Errorf("probe = %+v, want %+v", cfg.ReadinessProbe, want)
			}
			js, err := protojson.Marshal(cfg.Metadata)
			if err != nil {
				t.Fatal(err)
			}
			// What the control plane sees: camelCase field names, the user's own map keys untouched,
			// the probe as written (defaults are the runner's business, as in Istio).
			for _, s := range []string{
				`"discoveryAddress":"istiod.istio-system.svc:15012"`,
				`"proxyMetadata":{"ISTIO_META_DNS_CAPTURE":"true"}`,
				`"httpGet":{"httpHeaders":[{"name":"X-Probe","value":"trellis"}],"path":"/ready","port":9080,"scheme":"HTTPS"}`,
				`"periodSeconds":3`,
			} {
				if !strings.Contains(strings.ReplaceAll(string(js), " ", ""), s) {
					t.Errorf("metadata %s lacks %s", js, s)
				}
			}
			for _, snake := range []string{"discovery_address", "readiness_probe", "http_get", "http_headers"} {
				if strings.Contains(string(js), snake) {
					t.Errorf("metadata keeps the snake_case name %s: %s", snake, js)
				}
			}
			if strings.Contains(string(js), "timeoutSeconds") {
				t.Errorf("metadata invents fields the user did not write: %s", js)
			}
		})
	}
}

func TestProxyConfigWithoutProbeRunsNothingButIsStillSent(t *testing.T) {
	for _, doc := range []string{"", "{}", "concurrency: 2", "readinessProbe: null\nconcurrency: 2"} {
		cfg, err := ParseProxyConfig([]byte(doc))
		if err != nil {
			t.Fatalf("%q: %v", doc, err)
		}
		if cfg.ReadinessProbe != nil {
			t.Errorf("%q: probe %+v, want none", doc, cfg.ReadinessProbe)
		}
		if cfg.Metadata == nil {
			t.Fatalf("%q: no metadata", doc)
		}
		if _, ok := cfg.Metadata.GetFields()["readinessProbe"]; ok {
			t.Errorf("%q: metadata has a readinessProbe, which would turn health checking on", doc)
		}
	}
	cfg, _ := ParseProxyConfig([]byte("readinessProbe: null\nconcurrency: 2"))
	if got := cfg.Metadata.GetFields()["concurrency"].GetNumberValue(); got != 2 {
		t.Errorf("concurrency = %v, want 2", got)
	}
}

func TestBadProxyConfigIsRefusedNamingTheField(t *testing.T) {
	for _, tc := range []struct {
		doc, want string
	}{
		{"readinessProbe: {httpGet: {path: /}}", "readinessProbe.httpGet.port: must be between 1 and 65535, got 0"},
		{"readinessProbe: {tcpSocket: {port: 70000}}", "readinessProbe.tcpSocket.port: must be between 1 and 65535, got 70000"},
		{"readinessProbe: {grpc: {port: -1}}", "readinessProbe.grpc.port: must be between 1 and 65535, got -1"},
		{"readinessProbe: {timeoutSeconds: -1, tcpSocket: {port: 80}}", "readinessProbe.timeoutSeconds: must not be negative, got -1"},
		{"readinessProbe: {periodSeconds: 9999999999, tcpSocket: {port: 80}}", "readinessProbe.periodSeconds: must be at most 2147483647"},
		{"readinessProbe: {successThreshold: -2, tcpSocket: {port: 80}}", "readinessProbe.successThreshold: must not be negative"},
		{"readinessProbe: {periodSeconds: 5}", "readinessProbe: one of httpGet, tcpSocket, exec or grpc is required"},
		{"readinessProbe: {tcpSocket: {port: 80}, exec: {command: [\"true\"]}}", "readinessProbe: only one of httpGet, tcpSocket, exec or grpc may be set, got tcpSocket and exec"},
		{"readinessProbe: {exec: {command: []}}", "readinessProbe.exec.command: required"},
		{"readinessProbe: {exec: {command: [true]}}", "readinessProbe.exec.command: want a string, got bool"},
		{"readinessProbe: {exec: {command: 'sh -c true'}}", "readinessProbe.exec.command: want a list, got string"},
		{"readinessProbe: {httpGet: {port: 80, scheme: ftp}}", `readinessProbe.httpGet.scheme: "ftp": want HTTP or HTTPS`},
		{"readinessProbe: {httpGet: {port: 80, httpHeaders: [{name: 'bad name', value: x}]}}", `readinessProbe.httpGet.httpHeaders[0].name: "bad name" is not a valid header name`},
		{"readinessProbe: {httpGet: {port: 80, host: 'a/b'}}", `readinessProbe.httpGet.host: "a/b" is not a host name`},
		{"readinessProbe: {httpGet: {port: http}}", "readinessProbe.httpGet.port: want a whole number, got string"},
		{"readinessProbe: {httpGet: {port: 80.5}}", "readinessProbe.httpGet.port: want a whole number, got number 80.5"},
		{"readinessProbe: {httpGet: {port: 80, paht: /x}}", `readinessProbe: unknown field "paht"`},
		{"readinessProbe: [tcpSocket]", "readinessProbe: want an object, got a list"},
		{"readinessProbe: {tcpSocket: {port: 80}}\nreadiness_probe: {tcpSocket: {port: 81}}", "readinessProbe: given twice"},
		{"- a\n- b", "want a ProxyConfig object, got a list"},
		{"{unclosed", "not YAML or JSON"},
	} {
		cfg, err := ParseProxyConfig([]byte(tc.doc))
		if err == nil {
			t.Errorf("%q accepted: %+v", tc.doc, cfg.ReadinessProbe)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %q, want it to contain %q", tc.doc, err, tc.want)
		}
	}
}

func TestEveryProblemOfAProbeIsReportedAtOnce(t *testing.T) {
	err := (&Probe{TimeoutSeconds: -1, HTTPGet: &HTTPGet{}, GRPC: &GRPC{Port: 1}}).Validate()
	for _, want := range []string{"timeoutSeconds: must not be negative", "httpGet.port: must be between", "only one of"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate = %v, want it to mention %q", err, want)
		}
	}
	var nilProbe *Probe
	if nilProbe.Validate() == nil {
		t.Error("a nil probe validates")
	}
}

func TestDefaultsAreIstioAgents(t *testing.T) {
	got := Probe{HTTPGet: &HTTPGet{Port: 8080, Scheme: "HTTPS"}}.withDefaults()
	want := Probe{TimeoutSeconds: 1, PeriodSeconds: 10, SuccessThreshold: 1, FailureThreshold: 1,
		HTTPGet: &HTTPGet{Port: 8080, Path: "/", Scheme: "https", Host: "localhost"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("defaults = %+v %+v, want %+v %+v", got, got.HTTPGet, want, want.HTTPGet)
	}
	in := &Probe{InitialDelaySeconds: 4, TCPSocket: &TCPSocket{Port: 80}}
	tcp := in.withDefaults()
	if tcp.TCPSocket.Host != "localhost" || tcp.InitialDelaySeconds != 4 {
		t.Errorf("tcpSocket defaults = %+v %+v", tcp, tcp.TCPSocket)
	}
	if in.TCPSocket.Host != "" {
		t.Error("withDefaults changed the caller's probe")
	}
}

func TestProxyConfigAlreadyInNodeMetadataReadsTheSame(t *testing.T) {
	cfg, err := ParseProxyConfig([]byte("readinessProbe: {grpc: {port: 50051, service: reviews}, successThreshold: 2}"))
	if err != nil {
		t.Fatal(err)
	}
	again, err := ProxyConfigFromStruct(cfg.Metadata)
	if err != nil || !reflect.DeepEqual(again.ReadinessProbe, cfg.ReadinessProbe) {
		t.Fatalf("read back %+v, %v; want %+v", again.ReadinessProbe, err, cfg.ReadinessProbe)
	}
	bad, _ := ParseProxyConfig([]byte("concurrency: 2"))
	bad.Metadata.Fields["readinessProbe"] = bad.Metadata.Fields["concurrency"]
	if _, err := ProxyConfigFromStruct(bad.Metadata); err == nil || !strings.Contains(err.Error(), "readinessProbe: want an object, got a number") {
		t.Errorf("a number as readinessProbe: %v", err)
	}
}
