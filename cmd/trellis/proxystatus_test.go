package main

import (
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/trellis-mesh/trellis/internal/controlplane"
	"github.com/trellis-mesh/trellis/internal/testenv/adstest"
)

const statusMesh = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 9080, name: http, protocol: HTTP}
  workloadSelector:
    labels: {app: reviews}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: productpage-v1, namespace: default}
spec:
  address: 127.0.1.2
  labels: {app: productpage, version: v1}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v1, namespace: default}
spec:
  address: 127.0.1.3
  labels: {app: reviews, version: v1}
`

const (
	productpageID = "sidecar~127.0.1.2~productpage-v1.default~default.svc.cluster.local"
	reviewsID     = "sidecar~127.0.1.3~reviews-v1.default~default.svc.cluster.local"
)

// startStatusControlPlane runs a real control plane on ephemeral ports and
// returns its xDS and debug addresses.
func startStatusControlPlane(t *testing.T) (xdsAddr, debugAddr string) {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "services.yaml"), []byte(statusMesh), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan controlplane.Ready, 1)
	done := make(chan error, 1)
	go func() {
		done <- controlplane.Run(ctx, controlplane.Options{
			ConfigDir: dir, XDSAddress: "127.0.0.1:0", DebugAddress: "127.0.0.1:0",
			Logger: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})),
			Ready:  func(r controlplane.Ready) { ready <- r },
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("control plane: %v", err)
		}
	})
	select {
	case r := <-ready:
		return r.XDSAddr.String(), r.DebugAddr.String()
	case err := <-done:
		t.Fatalf("control plane: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("control plane not ready")
	}
	return "", ""
}

// waitForOutput runs proxy-status until its output matches every pattern.
func waitForOutput(t *testing.T, args []string, patterns ...string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, err := runCLI(context.Background(), args...)
		ok := err == nil
		for _, p := range patterns {
			ok = ok && regexp.MustCompile(p).MatchString(out)
		}
		if ok {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("proxy-status %v: err %v; output lacks %q:\n%s", args, err, patterns, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestProxyStatusShowsSyncedStaleAndNotSentProxies(t *testing.T) {
	xdsAddr, debugAddr := startStatusControlPlane(t)
	conn := adstest.Dial(t, xdsAddr)

	// productpage takes everything Envoy asks for and ACKs it all.
	pp := adstest.NewSotW(t, conn, adstest.Node(productpageID, map[string]string{"app": "productpage", "version": "v1"}))
	pp.Request(resourcev3.ClusterType)
	cds := pp.Expect(resourcev3.ClusterType, 5*time.Second)
	pp.ACK(cds)
	var eds []string
	for _, n := range adstest.ResourceNames(t, cds) {
		if strings.HasPrefix(n, "outbound|") {
			eds = append(eds, n)
		}
	}
	pp.Request(resourcev3.EndpointType, eds...)
	pp.ACK(pp.Expect(resourcev3.EndpointType, 5*time.Second), eds...)
	pp.Request(resourcev3.ListenerType)
	pp.ACK(pp.Expect(resourcev3.ListenerType, 5*time.Second))
	pp.Request(resourcev3.RouteType, "15001")
	pp.ACK(pp.Expect(resourcev3.RouteType, 5*time.Second), "15001")

	// reviews rejects its clusters and asks for nothing else.
	rv := adstest.NewSotW(t, conn, adstest.Node(reviewsID, map[string]string{"app": "reviews", "version": "v1"}))
	rv.Request(resourcev3.ClusterType)
	rejected := rv.Expect(resourcev3.ClusterType, 5*time.Second)
	rv.NACK(rejected, "", "cluster outbound|9080||reviews.default.svc.cluster.local: unsupported lb_policy")

	args := []string{"proxy-status", "--control-plane", debugAddr}
	out := waitForOutput(t, args,
		`(?m)^NAME\s+CLUSTER\s+CDS\s+LDS\s+EDS\s+RDS\s+ISTIOD\s+VERSION$`,
		`(?m)^productpage-v1\.default\s+-\s+SYNCED\s+SYNCED\s+SYNCED\s+SYNCED\s+`+regexp.QuoteMeta(debugAddr),
		`(?m)^reviews-v1\.default\s+-\s+STALE \(NACK\)\s+NOT SENT\s+NOT SENT\s+NOT SENT\s+`+regexp.QuoteMeta(debugAddr),
		`(?m)^  reviews-v1\.default CDS: cluster outbound\|9080\|\|reviews\.default\.svc\.cluster\.local: unsupported lb_policy$`,
	)
	t.Logf("proxy-status:\n%s", out)

	// One proxy, by name.namespace and by bare name: versions and the NACK.
	for _, name := range []string{"reviews-v1.default", "reviews-v1", reviewsID} {
		out = waitForOutput(t, []string{"proxy-status", "--control-plane", debugAddr, name},
			`(?m)^Proxy:\s+`+regexp.QuoteMeta(reviewsID)+`$`,
			`(?m)^CDS\s+STALE \(NACK\)\s+`+rejected.VersionInfo+`\s+-$`,
			`(?m)^LDS\s+NOT SENT\s+-\s+-$`,
			`(?m)^Last NACK:\s+CDS version `+rejected.VersionInfo+` at `,
			`unsupported lb_policy`,
		)
	}
	t.Logf("proxy-status reviews-v1:\n%s", out)

	if _, err := runCLI(context.Background(), "proxy-status", "--control-plane", debugAddr, "ratings-v1"); err == nil ||
		!strings.Contains(err.Error(), `no connected proxy named "ratings-v1"`) {
		t.Fatalf("unknown proxy: err = %v", err)
	}
}

func TestProxyStatusFailsClearlyWhenControlPlaneIsDown(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	_, err = runCLI(context.Background(), "proxy-status", "--control-plane", addr)
	if err == nil || !strings.Contains(err.Error(), "cannot reach the control plane at "+addr) {
		t.Fatalf("err = %v, want a clear unreachable error", err)
	}
}
