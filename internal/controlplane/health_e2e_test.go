package controlplane

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/trellis-mesh/trellis/internal/autoregister"
	"github.com/trellis-mesh/trellis/internal/proxy"
	"github.com/trellis-mesh/trellis/internal/proxy/apphealth"
	"github.com/trellis-mesh/trellis/internal/proxy/identity"
	"github.com/trellis-mesh/trellis/internal/testenv/adstest"
)

// A VM's trellis-proxy runs its PROXY_CONFIG readinessProbe against the
// app and reports to the control plane, which serves the VM's
// auto-registered entry as an endpoint only while the app answers its
// probe: not while the app starts up failing, then as soon as it passes,
// out again when it fails, and back when it recovers. Real proxy, real
// control plane, a real HTTP app.
func TestVMIsAnEndpointWhileItsAppPassesTheProbe(t *testing.T) {
	const vmIP = "127.0.9.7"
	app, err := net.Listen("tcp", vmIP+":0")
	if err != nil {
		t.Skipf("cannot bind %s (loopback /8 needed): %v", vmIP, err)
	}
	var ready atomic.Bool
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/ready" && !ready.Load() {
			http.Error(w, "warming up", http.StatusServiceUnavailable)
		}
	})}
	go func() { _ = srv.Serve(app) }()
	t.Cleanup(func() { _ = srv.Close() })

	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "vm.yaml"), vmGroup)
	cp := startWithCA(t, dir, t.TempDir())
	await := awaitEndpoints(t, cp.XDSAddr.String(), vmCluster)
	await("no VM yet", []string{})

	pc, err := apphealth.ParseProxyConfig(fmt.Appendf(nil, "readinessProbe: {periodSeconds: 1, httpGet: {host: %s, port: %d, path: /ready}}",
		vmIP, app.Addr().(*net.TCPAddr).Port))
	if err != nil {
		t.Fatal(err)
	}
	const vmID = "sidecar~" + vmIP + "~vm-1.vms~vms.svc.cluster.local"
	ctx, cancel := context.WithCancel(context.Background())
	admin := make(chan string, 1)
	var wg sync.WaitGroup
	wg.Go(func() {
		err := proxy.Run(ctx, proxy.Options{
			XDSAddress:    cp.XDSAddr.String(),
			NodeID:        vmID,
			Metadata:      map[string]string{"INTERCEPTION_MODE": "NONE", autoregister.GroupMetadata: "vm"},
			ProxyConfig:   pc,
			AdminAddress:  vmIP + ":0",
			DrainDuration: 100 * time.Millisecond,
			OnStarted:     func(addr string) { admin <- addr },
			Identity: &identity.Config{
				CAAddress: cp.CA.Addr.String(), RootCert: cp.CA.RootPEM(),
				Token:     func() (string, error) { return cp.CA.MintBootstrapToken("vms", "vm", time.Hour) },
				Namespace: "vms", ServiceAccount: "vm",
			},
			Logger: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo})),
		})
		if err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("VM proxy: %v", err)
		}
	})
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})

	// Once the VM's proxy is connected, a VM of the group without a probe
	// registers after it and is an endpoint at once; the probed VM, whose
	// app fails its probe, is not.
	deadline := time.Now().Add(10 * time.Second)
	for !connected(cp, vmID) {
		if time.Now().After(deadline) {
			t.Fatal("the VM's proxy did not connect within 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	plainNode := adstest.Node("sidecar~10.9.0.8~vm-2.vms~vms.svc.cluster.local", nil)
	plainNode.Metadata.Fields[autoregister.GroupMetadata] = structpb.NewStringValue("vm")
	plain := adstest.NewSotW(t, adstest.Dial(t, cp.XDSAddr.String()), plainNode)
	plain.Request(resourcev3.ClusterType)
	await("only the VM without a probe while the app warms up", []string{"10.9.0.8:8080"})
	// The VM's proxy serves its service all along: its inbound listener
	// does not come and go with the probe.
	adminAddr := <-admin
	inbound := vmIP + "_8080::" + vmIP + ":8080"
	awaitListener(t, adminAddr, inbound, "while the app warms up")

	ready.Store(true)
	await("the VM once its app passes the probe", []string{vmIP + ":8080", "10.9.0.8:8080"})
	ready.Store(false)
	await("the VM out once its app fails", []string{"10.9.0.8:8080"})
	awaitListener(t, adminAddr, inbound, "while the app fails")
	ready.Store(true)
	await("the VM back once its app recovers", []string{vmIP + ":8080", "10.9.0.8:8080"})
}

// awaitListener waits until the proxy's admin /listeners lists want.
func awaitListener(t *testing.T, adminAddr, want, when string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err := http.Get("http://" + adminAddr + "/listeners")
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if slices.Contains(strings.Fields(string(body)), want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: the VM's proxy has no listener %s; /listeners:\n%s", when, want, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// connected: the proxy has been sent config, which follows its connect
// hook (the auto-registration).
func connected(cp Ready, id string) bool {
	for _, p := range cp.XDS.Proxies() {
		if p.ID == id && p.Streams > 0 && len(p.Sent) > 0 {
			return true
		}
	}
	return false
}
