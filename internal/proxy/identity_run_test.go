package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"

	"github.com/trellis-mesh/trellis/internal/proxy/identity"
	"github.com/trellis-mesh/trellis/internal/proxy/identity/catest"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// A proxy with an identity agent is not ready until the CA issued its certificate for the
// SPIFFE ID of its node (namespace from the node ID, service account and trust domain from the
// metadata); /certs and /config_dump then show it, never its private key, and nothing logs the token.
func TestProxyWithCAGetsItsIdentityAndShowsItInCertsAndConfigDump(t *testing.T) {
	ca := catest.Start(t, 48*time.Hour)
	ca.Token = "bootstrap-token-do-not-log"
	ca.Fail.Store(true) // at first: readiness must wait
	var logs lockedBuffer
	adminCh := make(chan string, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{
			NodeID:        "sidecar~127.0.0.1~ratings-v1.shop~shop.svc.cluster.local",
			Metadata:      map[string]string{"SERVICE_ACCOUNT": "ratings", "TRUST_DOMAIN": "example.org"},
			Bootstrap:     mustBootstrap(t, `admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}`),
			DrainDuration: 100 * time.Millisecond,
			Logger:        slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
			Identity: &identity.Config{CAAddress: ca.Addr, RootCert: ca.RootPEM, MinRetry: 50 * time.Millisecond,
				Token: func() (string, error) { return ca.Token, nil }},
			OnStarted: func(a string) { adminCh <- a },
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	admin := <-adminCh
	for ca.Requests() < 2 {
		time.Sleep(20 * time.Millisecond)
	}
	if code, body := getBody(t, "http://"+admin+"/ready"); code != 503 {
		t.Fatalf("/ready without a certificate: %d %q", code, body)
	}
	ca.Fail.Store(false)
	deadline := time.Now().Add(20 * time.Second)
	for {
		if code, _ := getBody(t, "http://"+admin+"/ready"); code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("never ready after the CA answered")
		}
		time.Sleep(20 * time.Millisecond)
	}

	_, body := getBody(t, "http://"+admin+"/certs")
	var certs struct {
		Certificates []struct {
			CaCert    []map[string]any `json:"ca_cert"`
			CertChain []struct {
				Path                string `json:"path"`
				SerialNumber        string `json:"serial_number"`
				DaysUntilExpiration string `json:"days_until_expiration"`
				ValidFrom           string `json:"valid_from"`
				ExpirationTime      string `json:"expiration_time"`
				SubjectAltNames     []struct {
					URI string `json:"uri"`
				} `json:"subject_alt_names"`
			} `json:"cert_chain"`
		} `json:"certificates"`
	}
	if err := json.Unmarshal([]byte(body), &certs); err != nil {
		t.Fatalf("/certs: %v\n%s", err, body)
	}
	if len(certs.Certificates) != 1 || len(certs.Certificates[0].CaCert) != 1 || len(certs.Certificates[0].CertChain) != 1 {
		t.Fatalf("/certs:\n%s", body)
	}
	leaf := certs.Certificates[0].CertChain[0]
	if leaf.Path != "<inline>" || leaf.SerialNumber == "" || leaf.DaysUntilExpiration != "1" || leaf.ValidFrom == "" || leaf.ExpirationTime == "" ||
		len(leaf.SubjectAltNames) != 1 || leaf.SubjectAltNames[0].URI != "spiffe://example.org/ns/shop/sa/ratings" {
		t.Fatalf("/certs leaf: %+v\n%s", leaf, body)
	}

	_, dump := getBody(t, "http://"+admin+"/config_dump")
	compact := strings.Join(strings.Fields(dump), "") // protojson varies its spacing
	for _, want := range []string{"type.googleapis.com/envoy.admin.v3.SecretsConfigDump", `"name":"default"`, `"name":"ROOTCA"`, "[redacted]"} {
		if !strings.Contains(compact, want) {
			t.Errorf("/config_dump lacks %s", want)
		}
	}
	for _, leak := range []string{"PRIVATE KEY", ca.Token} {
		if strings.Contains(dump, leak) || strings.Contains(logs.String(), leak) || strings.Contains(body, leak) {
			t.Errorf("%q leaked into /config_dump, /certs or the logs", leak)
		}
	}
	if !strings.Contains(logs.String(), "workload certificate issued") {
		t.Errorf("the issue is not logged:\n%s", logs.String())
	}
}

func mustBootstrap(t *testing.T, y string) *bootstrapv3.Bootstrap {
	t.Helper()
	b, err := ParseBootstrap([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	return b
}
