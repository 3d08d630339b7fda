package status

import (
	"context"
	"io"
	"net/http"
	"testing"
)

// TestQuitQuitQuitOnStatusPort: POST /quitquitquit on the status port starts the proxy's stop;
// other methods are refused, and the health port does not serve it.
func TestQuitQuitQuitOnStatusPort(t *testing.T) {
	quit := make(chan struct{}, 2)
	s := New(Config{StatusAddress: "127.0.0.1:0", HealthAddress: "127.0.0.1:0", Quit: func() { quit <- struct{}{} }})
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Shutdown(context.Background()) })

	resp, err := http.Get("http://" + s.StatusAddr() + "/quitquitquit")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed || len(quit) != 0 {
		t.Fatalf("GET /quitquitquit: %d, quit called %d times", resp.StatusCode, len(quit))
	}
	resp, err = http.Post("http://"+s.HealthAddr()+"/quitquitquit", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound || len(quit) != 0 {
		t.Fatalf("POST /quitquitquit on the health port: %d", resp.StatusCode)
	}
	resp, err = http.Post("http://"+s.StatusAddr()+"/quitquitquit", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "OK\n" || len(quit) != 1 {
		t.Fatalf("POST /quitquitquit: %d %q, quit called %d times", resp.StatusCode, b, len(quit))
	}
}

func TestQuitQuitQuitOnlyFromLoopback(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:5000": true, "127.0.1.7:5000": true, "[::1]:5000": true,
		"10.1.2.3:5000": false, "[2001:db8::1]:5000": false, "garbage": false,
	} {
		if got := fromLoopback(addr); got != want {
			t.Errorf("fromLoopback(%q) = %v, want %v", addr, got, want)
		}
	}
}
