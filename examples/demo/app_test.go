package demo

import (
	"context"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestRunRejectsInvalidAppsBeforeListening(t *testing.T) {
	for _, tc := range []struct {
		app  App
		want string
	}{
		{App{Name: "details", Version: "v1"}, "unknown name"},
		{App{Name: "reviews", Version: "v4"}, "want v1, v2 or v3"},
		{App{Name: "ratings"}, "version is empty"},
		{App{Name: "productpage", Version: "v1", SidecarURL: "127.0.1.2:15001"}, "want http://host:port"},
	} {
		err := tc.app.Run(context.Background())
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: Run = %v, want error containing %q", tc.app, err, tc.want)
		}
	}
}

func TestRunReportsAddressInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	err = App{Name: "ratings", Version: "v1", Listen: ln.Addr().String()}.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "ratings-v1: listen") {
		t.Errorf("Run on a busy address = %v, want a listen error naming the app", err)
	}
}

func TestRunServesUntilContextDoneThenReturnsNil(t *testing.T) {
	// Run picks its own address; find a free one first.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- App{Name: "ratings", Version: "v1", Listen: addr}.Run(ctx) }()
	t.Cleanup(cancel)

	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("app never answered: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run after cancel = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if _, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		t.Error("app still accepts connections after Run returned")
	}
}
