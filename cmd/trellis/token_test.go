package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	pb "istio.io/api/security/v1alpha1"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"

	"github.com/trellis-mesh/trellis/internal/security/ca"
)

func TestTokenFromTheCLIGetsACertificateFromTheControlPlaneCA(t *testing.T) {
	caDir := filepath.Join(t.TempDir(), "ca")
	caAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := runCLI(ctx, "controlplane", "--config-dir", t.TempDir(), "--xds-address", "127.0.0.1:0",
			"--debug-address", "", "--ca-address", caAddr, "--ca-dir", caDir)
		done <- err
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("controlplane: %v", err)
		}
	})

	// The control plane creates the root on start; poll for it.
	deadline := time.Now().Add(10 * time.Second)
	var out string
	for {
		var err error
		out, err = runCLI(context.Background(), "token", "create", "--ca-dir", caDir, "--namespace", "default", "--service-account", "sleep", "--ttl", "2h")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("token create: %v\n%s", err, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
	token := strings.TrimSpace(out)
	if strings.Count(token, ".") != 2 || strings.ContainsAny(token, " \n") {
		t.Fatalf("output %q is not one JWT", out)
	}

	rootPEM, err := os.ReadFile(filepath.Join(caDir, ca.CACertFile))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(rootPEM)
	conn, err := grpc.NewClient(caAddr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: roots, ServerName: "istiod.istio-system.svc"})))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	id, _ := url.Parse("spiffe://cluster.local/ns/default/sa/sleep")
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{id}}, key)
	if err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer rcancel()
	var resp *pb.IstioCertificateResponse
	for {
		resp, err = pb.NewIstioCertificateServiceClient(conn).CreateCertificate(
			metadata.AppendToOutgoingContext(rctx, "authorization", "Bearer "+token),
			&pb.IstioCertificateRequest{Csr: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr}))})
		if err == nil || rctx.Err() != nil {
			break
		}
		time.Sleep(50 * time.Millisecond) // the CA port may not be bound yet
	}
	if err != nil {
		t.Fatalf("CreateCertificate with the CLI's token: %v", err)
	}
	block, _ := pem.Decode([]byte(resp.CertChain[0]))
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if leaf.URIs[0].String() != id.String() {
		t.Fatalf("issued %v", leaf.URIs)
	}
}

func TestTokenCreateWithoutACASaysHowToCreateOne(t *testing.T) {
	dir := t.TempDir()
	_, err := runCLI(context.Background(), "token", "create", "--ca-dir", dir, "--namespace", "default", "--service-account", "sleep")
	if err == nil || !strings.Contains(err.Error(), "trellis controlplane --ca-dir "+dir) {
		t.Fatalf("err = %v, want advice to start the control plane", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatal("token create wrote into the CA directory")
	}
}

func TestTokenCreateFlagMistakesAreReported(t *testing.T) {
	dir := t.TempDir()
	if _, err := ca.LoadOrCreateDir(dir, ca.Options{}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"token", "create", "--ca-dir", dir, "--service-account", "sleep"}, `"namespace" not set`},
		{[]string{"token", "create", "--ca-dir", dir, "--namespace", "default", "--service-account", "a:b"}, "not allowed"},
		{[]string{"token", "create", "--ca-dir", dir, "--namespace", "default", "--service-account", "sleep", "--ttl", "-1h"}, "must be positive"},
		{[]string{"token", "create", "--ca-dir", dir, "--cacerts", dir, "--namespace", "default", "--service-account", "sleep"}, "none of the others"},
	} {
		_, err := runCLI(context.Background(), tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: err = %v, want %q", tc.args, err, tc.want)
		}
	}
}
