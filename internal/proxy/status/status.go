// Package status is a proxy's status server, Istio's pilot-agent ports: 15020 serves
// /stats/prometheus, the proxy's Envoy stats merged with Istio's standard metrics
// (internal/proxy/istiometrics), and /healthz/ready; 15021 serves /healthz/ready alone, the port
// Kubernetes readiness probes and load balancers use. 15020 also serves POST /quitquitquit, as
// pilot-agent does: a Job's app calls it when done, and the proxy drains and exits 0. Either
// address may be empty to leave that port off. It depends on the proxy's stats and telemetry only.
package status

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/trellis-mesh/trellis/internal/proxy/istiometrics"
	"github.com/trellis-mesh/trellis/internal/proxy/stats"
)

// Istio's ports.
const (
	DefaultStatusPort = 15020
	DefaultHealthPort = 15021
)

// Config configures a status server.
type Config struct {
	// StatusAddress serves /stats/prometheus and /healthz/ready; HealthAddress /healthz/ready.
	// Empty leaves one off.
	StatusAddress, HealthAddress string
	Stats                        *stats.Store
	// Telemetry holds the Istio metrics; nil serves the Envoy stats alone.
	Telemetry *istiometrics.Telemetry
	// Ready is the proxy's readiness (admin /ready's answer): Envoy's state and whether it is LIVE.
	Ready func() (state string, ready bool)
	// Quit, if set, is called by POST /quitquitquit on the status port from a loopback address:
	// the proxy starts its termination drain, as on SIGTERM.
	Quit   func()
	Logger *slog.Logger
}

// Server runs the status and health listeners.
type Server struct {
	cfg     Config
	servers []*http.Server
	addrs   [2]string
	wg      sync.WaitGroup
}

// New returns a server for cfg; Start binds it.
func New(cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Server{cfg: cfg}
}

// Start binds the configured addresses and serves them until Shutdown.
func (s *Server) Start() error {
	status := http.NewServeMux()
	status.HandleFunc("GET /stats/prometheus", s.prometheus)
	status.HandleFunc("GET /healthz/ready", s.ready)
	if s.cfg.Quit != nil {
		status.HandleFunc("/quitquitquit", s.quit)
	}
	health := http.NewServeMux()
	health.HandleFunc("GET /healthz/ready", s.ready)
	for i, l := range []struct {
		name, addr string
		mux        *http.ServeMux
	}{{"status", s.cfg.StatusAddress, status}, {"health", s.cfg.HealthAddress, health}} {
		if l.addr == "" {
			continue
		}
		ln, err := net.Listen("tcp", l.addr)
		if err != nil {
			_ = s.Shutdown(context.Background())
			return fmt.Errorf("%s server: bind %s: %w", l.name, l.addr, err)
		}
		s.addrs[i] = ln.Addr().String()
		srv := &http.Server{Handler: l.mux, ReadHeaderTimeout: 10 * time.Second}
		s.servers = append(s.servers, srv)
		s.cfg.Logger.Info(l.name+" server listening", "address", s.addrs[i])
		s.wg.Go(func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				s.cfg.Logger.Error(l.name+" server stopped", "error", err)
			}
		})
	}
	return nil
}

// StatusAddr and HealthAddr are the bound addresses ("" when off).
func (s *Server) StatusAddr() string { return s.addrs[0] }

// HealthAddr is the health listener's bound address.
func (s *Server) HealthAddr() string { return s.addrs[1] }

// Shutdown stops both listeners, waiting for requests in flight until ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	var errs []error
	for _, srv := range s.servers {
		if err := srv.Shutdown(ctx); err != nil {
			_ = srv.Close()
			errs = append(errs, err)
		}
	}
	s.wg.Wait()
	return errors.Join(errs...)
}

func (s *Server) prometheus(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", stats.PrometheusContentType)
	if s.cfg.Stats != nil {
		if err := s.cfg.Stats.WritePrometheus(w, nil, false); err != nil {
			return
		}
	}
	if s.cfg.Telemetry != nil {
		_ = s.cfg.Telemetry.Registry.WritePrometheus(w)
	}
}

func (s *Server) ready(w http.ResponseWriter, _ *http.Request) {
	state, ok := "LIVE", true
	if s.cfg.Ready != nil {
		state, ok = s.cfg.Ready()
	}
	w.Header().Set("Content-Type", "text/plain; charset=UTF-8")
	if !ok {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_, _ = w.Write([]byte(state + "\n"))
}

// quit is pilot-agent's /quitquitquit: POST only, and only from the pod itself (a loopback
// address), since anyone who reaches the status port could otherwise stop the workload's proxy.
func (s *Server) quit(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "method not allowed: use POST", http.StatusMethodNotAllowed)
		return
	}
	if !fromLoopback(r.RemoteAddr) {
		http.Error(w, "only allowed from localhost", http.StatusForbidden)
		return
	}
	s.cfg.Logger.Info("POST /quitquitquit: draining and exiting", "remote", r.RemoteAddr)
	w.Header().Set("Content-Type", "text/plain; charset=UTF-8")
	_, _ = w.Write([]byte("OK\n"))
	s.cfg.Quit()
}

func fromLoopback(remote string) bool {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
