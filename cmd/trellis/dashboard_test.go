package main

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/ui"
)

func runDashboard(t *testing.T, ctx context.Context, args ...string) (string, error) {
	t.Helper()
	cmd := newRootCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(append([]string{"dashboard"}, args...))
	err := cmd.ExecuteContext(ctx)
	return out.String(), err
}

func TestDashboardPrintsTheURLOfARunningConsole(t *testing.T) {
	srv := httptest.NewServer(ui.New(ui.SyntheticTopology(3, 2, 1).Options()))
	t.Cleanup(srv.Close)
	addr := strings.TrimPrefix(srv.URL, "http://")

	out, err := runDashboard(t, context.Background(), "--address", addr)
	if err != nil {
		t.Fatalf("dashboard: %v\n%s", err, out)
	}
	if want := "Trellis console: http://" + addr + "/\n"; out != want {
		t.Errorf("output %q, want %q", out, want)
	}
}

func TestDashboardFailsClearlyWhenNothingAnswers(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close() // nothing listens there now

	_, err = runDashboard(t, context.Background(), "--address", addr)
	if err == nil || !strings.Contains(err.Error(), "no console answers at http://"+addr+"/") || !strings.Contains(err.Error(), "trellis up") {
		t.Errorf("dashboard with nothing listening: error %v, want one saying no console answers and how to start one", err)
	}

	other := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(other.Close)
	_, err = runDashboard(t, context.Background(), "--address", strings.TrimPrefix(other.URL, "http://"))
	if err == nil || !strings.Contains(err.Error(), "not as the Trellis console") {
		t.Errorf("dashboard against another server: error %v, want one saying it is not the console", err)
	}
}

func TestDashboardSyntheticServesAMadeUpMesh(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var out syncBuffer
	done := make(chan error, 1)
	go func() {
		cmd := newRootCmd()
		cmd.SetOut(&out)
		cmd.SetArgs([]string{"dashboard", "--synthetic", "50", "--address", "127.0.0.1:0"})
		done <- cmd.ExecuteContext(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("dashboard --synthetic: %v", err)
		}
	})
	re := regexp.MustCompile(`(http://\S+/)\n`)
	deadline := time.Now().Add(10 * time.Second)
	for re.FindStringSubmatch(out.String()) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("no URL printed within 10 s: %q", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	url := re.FindStringSubmatch(out.String())[1]
	out2, err := runDashboard(t, context.Background(), "--address", strings.TrimSuffix(strings.TrimPrefix(url, "http://"), "/"))
	if err != nil {
		t.Fatalf("dashboard against the synthetic console: %v %s", err, out2)
	}
	resp, err := http.Get(url + "api/graph")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("synthetic graph: %s", resp.Status)
	}
}
