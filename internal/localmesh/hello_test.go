package localmesh_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/localmesh"
)

// docs/local-mode.md promises that examples/hello runs as shown there.
func TestHelloExampleRunsAsDocumented(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:18080")
	if err != nil {
		t.Fatalf("the example's app port 127.0.0.1:18080 is taken (is something else running?): %v", err)
	}
	seen := make(chan string, 1)
	app := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case seen <- r.Host:
		default:
		}
		io.WriteString(w, "hello from the app\n")
	})}
	go app.Serve(ln)
	t.Cleanup(func() { app.Close() })

	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan localmesh.Mesh, 1)
	done := make(chan error, 1)
	go func() {
		done <- localmesh.Run(ctx, localmesh.Options{
			ConfigDir:  "../../examples/hello",
			XDSAddress: "127.0.0.1:0",
			Logger:     slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})),
			Ready:      func(m localmesh.Mesh) { ready <- m },
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("mesh: %v", err)
		}
	})
	select {
	case m := <-ready:
		if len(m.Proxies) != 1 || m.Proxies[0].IP != "127.0.1.20" {
			t.Fatalf("want one proxy on 127.0.1.20, got %+v", m.Proxies)
		}
	case err := <-done:
		t.Fatalf("mesh did not start: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("mesh not ready in 30 s")
	}

	// curl -x http://127.0.1.20:15001 http://hello:8000/
	proxyURL, _ := url.Parse("http://127.0.1.20:15001")
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL)}}
	defer client.CloseIdleConnections()
	resp, err := client.Get("http://hello:8000/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "hello from the app\n" {
		t.Fatalf("status %d, body %q", resp.StatusCode, body)
	}
	if host := <-seen; host != "hello:8000" {
		t.Errorf("app saw Host %q, want the host the client asked for", host)
	}
}
