package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/testenv"
)

// syncBuffer lets the test read what `up` prints while it runs.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// What a newcomer does first: `trellis up`, open the printed URL, find the
// config where the output says it is, and Ctrl-C.
func TestUpPrintsURLsAndServesTheFrontPage(t *testing.T) {
	testenv.LockDemoAddresses(t)
	home := t.TempDir()
	t.Setenv("HOME", home)

	ctx, cancel := context.WithCancel(context.Background())
	var out syncBuffer
	done := make(chan error, 1)
	go func() {
		cmd := newRootCmd()
		cmd.SetOut(&out)
		cmd.SetErr(io.Discard)
		cmd.SetArgs([]string{"up", "--xds-address", "127.0.0.1:0", "--debug-address", "127.0.0.1:0", "--ui-address", "127.0.0.1:0", "--ca-dir", ""})
		done <- cmd.ExecuteContext(ctx)
	}()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("up returned %v after Ctrl-C", err)
			}
		case <-time.After(20 * time.Second):
			t.Error("up did not stop within 20 s of Ctrl-C")
		}
	}
	t.Cleanup(stop)

	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(out.String(), "Press Ctrl-C to stop.") {
		select {
		case err := <-done:
			t.Fatalf("up exited early: %v\n%s", err, out.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("up printed no ready banner within 60 s:\n%s", out.String())
		}
	}
	printed := out.String()
	front := regexp.MustCompile(`Ingress gateway \(front page\):\s+(http://\S+)`).FindStringSubmatch(printed)
	if front == nil {
		t.Fatalf("no front page URL in:\n%s", printed)
	}
	resp, err := http.Get(front[1])
	if err != nil {
		t.Fatalf("front page %s: %v", front[1], err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `<p id="reviews-version">reviews-v1</p>`) {
		t.Fatalf("front page: status %d, body:\n%s", resp.StatusCode, body)
	}

	console := regexp.MustCompile(`Console \(trellis dashboard\):\s+(http://\S+)`).FindStringSubmatch(printed)
	if console == nil {
		t.Fatalf("no console URL in:\n%s", printed)
	}
	resp, err = http.Get(console[1] + "api/services")
	if err != nil {
		t.Fatalf("console %s: %v", console[1], err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"name":"reviews"`) {
		t.Errorf("console services: status %d, body:\n%s", resp.StatusCode, body)
	}

	configDir := filepath.Join(home, ".trellis", "demo")
	if !strings.Contains(printed, configDir) {
		t.Errorf("output does not say where the editable config is (%s):\n%s", configDir, printed)
	}
	if _, err := os.Stat(filepath.Join(configDir, "reviews.yaml")); err != nil {
		t.Errorf("demo config not written where printed: %v", err)
	}

	stop()
	if _, err := http.Get(front[1]); err == nil {
		t.Error("the gateway still answers after up stopped")
	}
}
