package translate

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/trellis-mesh/trellis/internal/config"
	"github.com/trellis-mesh/trellis/internal/model"
	"github.com/trellis-mesh/trellis/internal/proxy/server"
)

// TestGatewayTCPRouteSplitsRealConnectionsByWeight sends real TCP connections through a
// trellis-proxy configured from a Gateway TCP server and a VirtualService tcp route with weights
// 80/20 (Istio's TCP traffic shifting task): both subsets answer, v1 far more often.
func TestGatewayTCPRouteSplitsRealConnectionsByWeight(t *testing.T) {
	v1, v2 := nameServer(t, "v1"), nameServer(t, "v2")
	port := freePort(t)
	yaml := fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: tcp-echo, namespace: default}
spec:
  hosts: [tcp-echo.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 9000, name: tcp, protocol: TCP}
  endpoints:
  - {address: 127.0.0.1, ports: {tcp: %d}, labels: {version: v1}}
  - {address: 127.0.0.1, ports: {tcp: %d}, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: tcp-echo, namespace: default}
spec:
  host: tcp-echo
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: %d, name: tcp, protocol: TCP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: tcp-echo, namespace: default}
spec:
  hosts: ["*"]
  gateways: [gw]
  tcp:
  - route:
    - destination: {host: tcp-echo, port: {number: 9000}, subset: v1}
      weight: 80
    - destination: {host: tcp-echo, port: {number: 9000}, subset: v2}
      weight: 20
`, v1, v2, port)
	startGatewayProxy(t, yaml)

	counts := map[string]int{}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	deadline := time.Now().Add(20 * time.Second)
	for n := 0; n < 200; {
		name, err := readName(addr)
		if err != nil {
			if time.Now().After(deadline) {
				t.Fatalf("connection %d through %s: %v", n, addr, err)
			}
			time.Sleep(20 * time.Millisecond) // the listener may still be starting
			continue
		}
		counts[name]++
		n++
	}
	t.Logf("200 connections: %v", counts)
	if counts["v1"] == 0 || counts["v2"] == 0 || counts["v1"] <= counts["v2"] || counts["v1"]+counts["v2"] != 200 {
		t.Errorf("connections per subset %v: want both, v1 (80%%) well ahead of v2 (20%%)", counts)
	}
}

// startGatewayProxy translates yaml for an ingress gateway at 127.0.0.1 in local mode and
// applies the result to a real trellis-proxy.
func startGatewayProxy(t *testing.T, yaml string) {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "config.yaml"), []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, _, err := config.LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	p, err := model.ParseProxy("router~127.0.0.1~gw.default~default.svc.cluster.local")
	if err != nil {
		t.Fatal(err)
	}
	p.Interception = model.InterceptNone
	p.Labels = map[string]string{"istio": "ingressgateway"}
	res, err := Build(model.NewSnapshot(cfg), p)
	if err != nil {
		t.Fatal(err)
	}
	px := server.New(server.Options{})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = px.Shutdown(ctx)
	})
	for _, step := range []struct {
		typ  string
		msgs []proto.Message
	}{
		{server.ClusterType, asMessages(res.Clusters)},
		{server.EndpointType, asMessages(res.Endpoints)},
		{server.ListenerType, asMessages(res.Listeners)},
	} {
		if err := px.OnResources(step.typ, step.msgs); err != nil {
			t.Fatalf("%s: %v", step.typ, err)
		}
	}
}

func asMessages[T proto.Message](in []T) []proto.Message {
	out := make([]proto.Message, 0, len(in))
	for _, m := range in {
		out = append(out, m)
	}
	return out
}

// nameServer accepts connections on loopback and writes name to each; it returns the port.
func nameServer(t *testing.T, name string) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte(name + "\n"))
			_ = c.Close()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func readName(addr string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", err
	}
	return line[:len(line)-1], nil
}

// TestGatewayTLSPassthroughRoutesBySNI opens real TLS sessions through a Gateway TLS
// PASSTHROUGH server: the proxy reads only the SNI, and each backend's own certificate answers.
func TestGatewayTLSPassthroughRoutesBySNI(t *testing.T) {
	a, b := tlsNameServer(t, "a"), tlsNameServer(t, "b")
	port := freePort(t)
	yaml := fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: backends, namespace: default}
spec:
  hosts: [a.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 443, name: tls, protocol: TLS, targetPort: %d}
  endpoints:
  - {address: 127.0.0.1}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: b, namespace: default}
spec:
  hosts: [b.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 443, name: tls, protocol: TLS, targetPort: %d}
  endpoints:
  - {address: 127.0.0.1}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: %d, name: tls, protocol: TLS}
    tls: {mode: PASSTHROUGH}
    hosts: ["*.example.com"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: passthrough, namespace: default}
spec:
  hosts: [a.example.com, b.example.com]
  gateways: [gw]
  tls:
  - match:
    - sniHosts: [a.example.com]
    route:
    - destination: {host: a.default.svc.cluster.local, port: {number: 443}}
  - match:
    - sniHosts: [b.example.com]
    route:
    - destination: {host: b.default.svc.cluster.local, port: {number: 443}}
`, a, b, port)
	startGatewayProxy(t, yaml)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	for _, want := range []string{"a", "b", "a"} {
		got, err := readTLSName(t, addr, want+".example.com")
		if err != nil {
			t.Fatalf("SNI %s.example.com: %v", want, err)
		}
		if got != want {
			t.Errorf("SNI %s.example.com reached backend %q", want, got)
		}
	}
	// No chain has this SNI: the gateway closes the connection.
	if got, err := readTLSName(t, addr, "c.example.com"); err == nil {
		t.Errorf("SNI c.example.com reached backend %q; want the connection refused", got)
	}
}

// tlsNameServer is a TLS server with a self-signed certificate for "<name>.example.com" that
// writes name on each session; it returns the port.
func tlsNameServer(t *testing.T, name string) int {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: name + ".example.com"},
		DNSNames:     []string{name + ".example.com"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				_, _ = c.Write([]byte(name + "\n"))
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

// readTLSName opens a TLS session to addr with sni, checks the certificate is for sni, and
// reads the backend's name; it retries refused dials while the listener starts.
func readTLSName(t *testing.T, addr, sni string) (string, error) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		raw, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			if time.Now().After(deadline) {
				return "", err
			}
			time.Sleep(20 * time.Millisecond)
			continue
		}
		defer raw.Close()
		_ = raw.SetDeadline(time.Now().Add(5 * time.Second))
		c := tls.Client(raw, &tls.Config{ServerName: sni, InsecureSkipVerify: true})
		if err := c.Handshake(); err != nil {
			return "", err
		}
		if cn := c.ConnectionState().PeerCertificates[0].Subject.CommonName; cn != sni {
			return "", fmt.Errorf("certificate for %q", cn)
		}
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			return "", err
		}
		return line[:len(line)-1], nil
	}
}

// TestAuthorizationPolicyGuardsGatewayTCPConnections: AuthorizationPolicies apply to TCP chains
// with Istio's TCP rules. A DENY rule's HTTP-only field (paths) is ignored, so it denies the
// connection; an ALLOW rule with one is dropped, so alone it allows nothing; ALLOW by source IP
// and port lets the connection through.
func TestAuthorizationPolicyGuardsGatewayTCPConnections(t *testing.T) {
	const policy = `---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: p, namespace: default}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  action: %s
  rules:
  - from:
    - source: {ipBlocks: [127.0.0.1]}
    to:
    - operation: {%s}
`
	for _, tt := range []struct {
		name, action, op string
		allowed          bool
	}{
		{"DENY ignores paths on TCP", "DENY", "paths: [/admin]", false},
		{"ALLOW with paths allows nothing on TCP", "ALLOW", "paths: [/admin]", false},
		{"ALLOW by source and port", "ALLOW", "ports: ['%d']", true},
		{"DENY on another port", "DENY", "ports: ['1']", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			backend := nameServer(t, "backend")
			port := freePort(t)
			op := tt.op
			if tt.action == "ALLOW" && tt.allowed {
				op = fmt.Sprintf(op, port)
			}
			yaml := fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: echo, namespace: default}
spec:
  hosts: [echo.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 9000, name: tcp, protocol: TCP, targetPort: %d}
  endpoints:
  - {address: 127.0.0.1}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: %d, name: tcp, protocol: TCP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: echo, namespace: default}
spec:
  hosts: ["*"]
  gateways: [gw]
  tcp:
  - route:
    - destination: {host: echo.default.svc.cluster.local, port: {number: 9000}}
`, backend, port) + fmt.Sprintf(policy, tt.action, op)
			startGatewayProxy(t, yaml)
			addr := fmt.Sprintf("127.0.0.1:%d", port)
			// Wait for the listener: a refused dial means it is not up yet; an accepted and
			// closed one is the policy's answer.
			deadline := time.Now().Add(20 * time.Second)
			for {
				c, err := net.DialTimeout("tcp", addr, 2*time.Second)
				if err == nil {
					_ = c.Close()
					break
				}
				if time.Now().After(deadline) {
					t.Fatal(err)
				}
				time.Sleep(20 * time.Millisecond)
			}
			got, err := readName(addr)
			if tt.allowed && (err != nil || got != "backend") {
				t.Errorf("got %q, %v; want the backend's name", got, err)
			}
			if !tt.allowed && err == nil {
				t.Errorf("got %q; want the connection closed by RBAC", got)
			}
		})
	}
}
