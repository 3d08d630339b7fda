package main

import (
	"context"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/trellis-mesh/trellis/internal/testenv/xdsrecorder"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
)

func TestAgentEnvironmentBecomesNodeMetadataAsInIstio(t *testing.T) {
	for _, tc := range []struct {
		name    string
		environ []string
		want    map[string]string
	}{
		{"nothing", []string{"HOME=/root", "PATH=/bin"}, map[string]string{}},
		{"ISTIO_META_ prefix", []string{"ISTIO_META_AUTO_REGISTER_GROUP=reviews-vm", "ISTIO_META_DNS_CAPTURE=true", "ISTIO_META_EMPTY=", "ISTIO_META_=nokey", "NOT_ISTIO_META_X=1"},
			map[string]string{"AUTO_REGISTER_GROUP": "reviews-vm", "DNS_CAPTURE": "true", "EMPTY": ""}},
		{"the agent's names", []string{"POD_NAME=reviews-vm-1", "POD_NAMESPACE=bookinfo", "INSTANCE_IP=10.0.5.7", "SERVICE_ACCOUNT=reviews"},
			map[string]string{"NAME": "reviews-vm-1", "NAMESPACE": "bookinfo", "INSTANCE_IPS": "10.0.5.7", "SERVICE_ACCOUNT": "reviews"}},
		{"those win over ISTIO_META_", []string{"ISTIO_META_NAMESPACE=meta", "POD_NAMESPACE=bookinfo", "ISTIO_META_NAME=meta", "POD_NAME="},
			map[string]string{"NAMESPACE": "bookinfo", "NAME": "meta"}},
		{"first of duplicates, as os.Getenv", []string{"POD_NAMESPACE=first", "POD_NAMESPACE=second", "ISTIO_META_X=first", "ISTIO_META_X=second"},
			map[string]string{"NAMESPACE": "first", "X": "first"}},
		{"ISTIO_METAJSON_ is not ISTIO_META_", []string{`ISTIO_METAJSON_LABELS={"app":"reviews"}`}, map[string]string{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := metadataFromEnv(tc.environ); !maps.Equal(got, tc.want) {
				t.Errorf("metadata = %v, want %v", got, tc.want)
			}
		})
	}
}

// startRecordingCP serves an empty config to nodeID (enough for a proxy to be ready), recording
// every request.
func startRecordingCP(t *testing.T, nodeID string) *xdsrecorder.Server {
	t.Helper()
	cp := xdsrecorder.Start(t)
	snap, err := cachev3.NewSnapshot("1", map[resourcev3.Type][]types.Resource{
		resourcev3.ClusterType: {}, resourcev3.ListenerType: {},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := cp.Cache.SetSnapshot(context.Background(), nodeID, snap); err != nil {
		t.Fatal(err)
	}
	return cp
}

// minimalEnv is an environment with nothing of Istio's in it, whatever the test's own holds.
func minimalEnv(extra ...string) []string {
	return append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}, extra...)
}

// TestVMClusterEnvRegistersTheNodeAndReportsTheAppsHealth runs the binary as a VM runs Istio's
// agent from istioctl's cluster.env: the environment names the workload and carries the
// WorkloadGroup's probe; the control plane sees all of it on the node, then the health reports.
func TestVMClusterEnvRegistersTheNodeAndReportsTheAppsHealth(t *testing.T) {
	bin := buildBinary(t)
	const nodeID = "sidecar~127.0.0.1~reviews-vm-1.bookinfo~bookinfo.svc.cluster.local"
	cp := startRecordingCP(t, nodeID)
	var down atomic.Bool
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if down.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	t.Cleanup(app.Close)
	appPort := app.Listener.Addr().(*net.TCPAddr).Port

	p := &proxyProcess{cmd: exec.Command(bin, "--xds-address", cp.Addr, "--node-id", nodeID, "--admin-address", "127.0.0.1:0",
		"--metadata", "NETWORK=from-flag", "--label", "version=from-flag")}
	p.cmd.Env = minimalEnv(
		"ISTIO_META_AUTO_REGISTER_GROUP=reviews-vm", "ISTIO_META_NETWORK=vpc-1", "ISTIO_META_WORKLOAD_NAME=reviews-vm",
		"POD_NAMESPACE=bookinfo", "POD_NAME=reviews-vm-1", "INSTANCE_IP=127.0.0.1", "SERVICE_ACCOUNT=reviews",
		`ISTIO_METAJSON_LABELS={"app":"reviews","version":"vm"}`,
		fmt.Sprintf(`PROXY_CONFIG={"readinessProbe":{"periodSeconds":1,"httpGet":{"host":"127.0.0.1","port":%d,"path":"/ready"}}}`, appPort),
	)
	logs := &lockedBuffer{}
	p.cmd.Stderr = logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.cmd.Process.Kill(); _ = p.cmd.Wait() })

	eventually(t, "the first request", func() (bool, string) { return len(cp.Requests()) > 0, logs.String() })
	md := cp.Requests()[0].GetNode().GetMetadata().GetFields()
	for k, want := range map[string]string{
		"AUTO_REGISTER_GROUP": "reviews-vm", "WORKLOAD_NAME": "reviews-vm", "NETWORK": "from-flag",
		"NAMESPACE": "bookinfo", "NAME": "reviews-vm-1", "INSTANCE_IPS": "127.0.0.1", "SERVICE_ACCOUNT": "reviews",
	} {
		if got := md[k].GetStringValue(); got != want {
			t.Errorf("node metadata %s = %q, want %q", k, got, want)
		}
	}
	labels := md["LABELS"].GetStructValue().AsMap()
	if labels["app"] != "reviews" || labels["version"] != "from-flag" {
		t.Errorf("node metadata LABELS = %v, want app=reviews from the environment, version=from-flag from --label", labels)
	}
	pc := md["PROXY_CONFIG"].GetStructValue()
	if pc.GetFields()["readinessProbe"].GetStructValue() == nil {
		t.Fatalf("node metadata PROXY_CONFIG = %v, want a Struct with the readinessProbe", md["PROXY_CONFIG"])
	}

	reports := func() []*discoveryv3.DiscoveryRequest {
		return cp.RequestsOf("type.googleapis.com/istio.v1.HealthInformation")
	}
	eventually(t, "a healthy report", func() (bool, string) { return len(reports()) == 1, logs.String() })
	if d := reports()[0].GetErrorDetail(); d != nil {
		t.Fatalf("first report has error_detail %v, want healthy", d)
	}
	down.Store(true)
	eventually(t, "an unhealthy report", func() (bool, string) { return len(reports()) == 2, logs.String() })
	if d := reports()[1].GetErrorDetail(); d.GetCode() != 13 || !strings.Contains(d.GetMessage(), "status 503") {
		t.Errorf("second report error_detail %v, want code 13 and the 503", d)
	}
	if out := logs.String(); !strings.Contains(out, `msg="application unhealthy"`) || !strings.Contains(out, `msg="application healthy"`) {
		t.Errorf("no transition in the logs:\n%s", out)
	}
}

func TestBadAgentEnvironmentStopsTheProxyNamingTheVariable(t *testing.T) {
	bin := buildBinary(t)
	for _, tc := range []struct{ env, want string }{
		{"PROXY_CONFIG=readinessProbe: {httpGet: {path: /ready}}",
			"trellis-proxy: $PROXY_CONFIG: readinessProbe.httpGet.port: must be between 1 and 65535, got 0"},
		{"PROXY_CONFIG=readinessProbe: {tcpSocket: {port: 80}, exec: {command: [\"true\"]}}",
			"$PROXY_CONFIG: readinessProbe: only one of httpGet, tcpSocket, exec or grpc may be set, got tcpSocket and exec"},
		{"PROXY_CONFIG=[not, a, config]", "$PROXY_CONFIG: want a ProxyConfig object, got a list"},
		{"ISTIO_METAJSON_LABELS=app=reviews", "$ISTIO_METAJSON_LABELS: want a JSON object of strings"},
	} {
		cmd := exec.Command(bin, "--node-id", "sidecar~127.0.0.1~a.b~b.svc.cluster.local", "--admin-address", "127.0.0.1:0")
		cmd.Env = minimalEnv(tc.env)
		out, err := runToCompletion(cmd)
		if err == nil || !strings.Contains(out, tc.want) {
			t.Errorf("%s: exit %v, output %q; want a failure saying %q", tc.env, err, out, tc.want)
		}
	}
}
