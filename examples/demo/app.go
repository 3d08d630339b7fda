package demo

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"time"
)

// shutdownTimeout bounds how long in-flight requests may finish after Run's
// context is done.
const shutdownTimeout = 5 * time.Second

// App is one instance of a demo service.
type App struct {
	Name    string // "productpage", "reviews" or "ratings"
	Version string // "v1"; reviews also "v2" or "v3"
	Listen  string // where the app serves, e.g. "127.0.0.1:19083"
	// SidecarURL is the workload's proxy, used as an explicit HTTP proxy
	// for calls to other services, e.g. "http://127.0.1.3:15001". "" calls
	// directly, which only works where the service names resolve.
	SidecarURL string
	Logger     *slog.Logger // nil: slog.Default()
}

// ID is the app's workload name, e.g. "reviews-v2".
func (a App) ID() string { return a.Name + "-" + a.Version }

// Run listens on a.Listen and serves until ctx is done, then shuts down
// gracefully. It returns nil after a clean shutdown.
func (a App) Run(ctx context.Context) error {
	if _, _, err := a.handler(); err != nil {
		return err
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", a.Listen)
	if err != nil {
		return fmt.Errorf("demo app %s: listen: %w", a.ID(), err)
	}
	return a.Serve(ctx, ln)
}

// Serve is Run on a listener the caller opened (tests use ":0"). It closes
// ln.
func (a App) Serve(ctx context.Context, ln net.Listener) error {
	h, tr, err := a.handler()
	if err != nil {
		ln.Close()
		return err
	}
	defer tr.CloseIdleConnections()
	log := a.logger()
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.Debug("demo app serving", "addr", ln.Addr().String(), "sidecar", a.SidecarURL)

	select {
	case err := <-errc:
		return fmt.Errorf("demo app %s: serve on %s: %w", a.ID(), ln.Addr(), err)
	case <-ctx.Done():
	}
	// ctx is already done; the shutdown gets its own deadline.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
		<-errc
		return fmt.Errorf("demo app %s: shutdown: %w", a.ID(), err)
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("demo app %s: serve on %s: %w", a.ID(), ln.Addr(), err)
	}
	return nil
}

func (a App) logger() *slog.Logger {
	l := a.Logger
	if l == nil {
		l = slog.Default()
	}
	return l.With("app", a.Name, "version", a.Version)
}

// handler validates a and builds its HTTP handler, with the transport its
// outbound calls share (the caller closes its idle connections).
func (a App) handler() (http.Handler, *http.Transport, error) {
	if a.Version == "" {
		return nil, nil, fmt.Errorf("demo app %q: version is empty", a.Name)
	}
	tr, err := a.transport()
	if err != nil {
		return nil, nil, err
	}
	c := &outbound{client: &http.Client{Transport: tr}, log: a.logger()}
	switch a.Name {
	case "productpage":
		return productpage{out: c}.routes(), tr, nil
	case "reviews":
		if _, ok := starColor[a.Version]; !ok && a.Version != "v1" {
			return nil, nil, fmt.Errorf("demo app reviews: version %q: want v1, v2 or v3", a.Version)
		}
		return reviews{version: a.Version, out: c}.routes(), tr, nil
	case "ratings":
		return ratings{}.routes(), tr, nil
	}
	return nil, nil, fmt.Errorf("demo app %q: unknown name: want productpage, reviews or ratings", a.Name)
}

// transport pools keep-alive connections to the sidecar: every outbound
// call of the app goes through this one transport.
func (a App) transport() (*http.Transport, error) {
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        128,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     90 * time.Second,
	}
	if a.SidecarURL != "" {
		u, err := url.Parse(a.SidecarURL)
		if err != nil || u.Scheme != "http" || u.Host == "" {
			return nil, fmt.Errorf("demo app %s: sidecar URL %q: want http://host:port", a.ID(), a.SidecarURL)
		}
		tr.Proxy = http.ProxyURL(u)
	}
	return tr, nil
}

func healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write([]byte("ok\n"))
}
