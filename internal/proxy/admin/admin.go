package admin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"slices"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"

	"github.com/trellis-mesh/trellis/internal/proxy/listener"
	"github.com/trellis-mesh/trellis/internal/proxy/stats"
	"github.com/trellis-mesh/trellis/internal/proxy/upstream"
)

// Source is what the admin API reads from the proxy.
type Source interface {
	// Ready returns Envoy's server state ("LIVE", "PRE_INITIALIZING", "DRAINING") and whether it is LIVE.
	Ready() (state string, ready bool)
	ConfigDump() (*adminv3.ConfigDump, error)
	Clusters() []*upstream.Cluster
	Listeners() []listener.Info
	// DrainListeners is POST /drain_listeners: drain every listener (only inbound ones when
	// inboundOnly), gracefully or at once, and report DRAINING from now on.
	DrainListeners(inboundOnly, graceful bool)
}

// Logging is the proxy's per-component log levels, in Envoy's names (/logging).
type Logging interface {
	// Levels lists component and level name pairs, sorted by component.
	Levels() [][2]string
	Set(component, level string) error
	SetAll(level string) error
}

// Config configures the admin server.
type Config struct {
	// Address to bind, host:port.
	Address string
	Source  Source
	Stats   *stats.Store
	Logger  *slog.Logger
	// Quit is called on POST /quitquitquit; nil disables the endpoint.
	Quit func()
	// Logging backs /logging; nil disables the endpoint.
	Logging Logging
	// ReopenLogs is called on POST /reopen_logs (access log rotation); nil disables the endpoint.
	ReopenLogs func() error
	// Certs backs /certs: the certificates the proxy holds (nil: none).
	Certs func() *adminv3.Certificates
}

// Server is the admin HTTP server.
type Server struct {
	cfg  Config
	ln   net.Listener
	srv  *http.Server
	done chan struct{}
}

// New returns an admin server; Start binds it.
func New(cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Server{cfg: cfg, done: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", s.index)
	mux.HandleFunc("GET /ready", s.ready)
	mux.HandleFunc("GET /config_dump", s.configDump)
	mux.HandleFunc("GET /certs", s.certs)
	mux.HandleFunc("GET /stats", s.stats)
	mux.HandleFunc("GET /stats/prometheus", s.prometheus)
	mux.HandleFunc("GET /clusters", s.clusters)
	mux.HandleFunc("GET /listeners", s.listeners)
	mux.HandleFunc("POST /quitquitquit", s.quit)
	mux.HandleFunc("POST /drain_listeners", s.drainListeners)
	mux.HandleFunc("GET /logging", s.logging)
	mux.HandleFunc("POST /logging", s.logging)
	mux.HandleFunc("POST /reopen_logs", s.reopenLogs)
	s.srv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug),
	}
	return s
}

// Start binds the admin address and serves in the background until Shutdown.
func (s *Server) Start() error {
	ln, err := net.Listen("tcp", s.cfg.Address)
	if err != nil {
		return fmt.Errorf("admin: bind %s: %w", s.cfg.Address, err)
	}
	s.ln = ln
	s.cfg.Logger.Info("admin listening", "address", ln.Addr().String())
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.cfg.Logger.Error("admin server stopped", "error", err)
		}
	}()
	return nil
}

// Addr is the bound address (useful when Address asked for port 0).
func (s *Server) Addr() string {
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// Shutdown stops the server, waiting for requests in flight until ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	if s.ln == nil {
		return nil
	}
	err := s.srv.Shutdown(ctx)
	if err != nil {
		_ = s.srv.Close()
	}
	<-s.done
	if err != nil {
		return fmt.Errorf("admin shutdown: %w", err)
	}
	return nil
}

const indexText = `admin commands are:
  /: this page
  /certs: certificates the proxy holds, with SANs, serial and expiry (JSON, Envoy's envoy.admin.v3.Certificates)
  /clusters: upstream cluster status (?format=json)
  /config_dump: current configuration (JSON, Envoy's envoy.admin.v3.ConfigDump)
  /drain_listeners (POST): drain listeners (?inboundonly, ?graceful)
  /listeners: listeners and their addresses (?format=json)
  /logging: log levels per component; POST ?level=LEVEL sets all, ?COMPONENT=LEVEL one
  /quitquitquit (POST): exit the proxy
  /ready: server state; 200 when LIVE
  /reopen_logs (POST): reopen access log files (after rotation)
  /stats: statistics (?filter=REGEX, ?usedonly, ?format=json|prometheus)
  /stats/prometheus: statistics in Prometheus text format (?filter=REGEX, ?usedonly)
`

func (s *Server) index(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=UTF-8")
	_, _ = w.Write([]byte(indexText))
}

func (s *Server) ready(w http.ResponseWriter, _ *http.Request) {
	state, ok := s.cfg.Source.Ready()
	w.Header().Set("Content-Type", "text/plain; charset=UTF-8")
	if !ok {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_, _ = w.Write([]byte(state + "\n"))
}

func (s *Server) quit(w http.ResponseWriter, _ *http.Request) {
	if s.cfg.Quit == nil {
		http.Error(w, "quitquitquit is disabled", http.StatusNotImplemented)
		return
	}
	_, _ = w.Write([]byte("OK\n"))
	go s.cfg.Quit() // after the reply: quitting shuts this server down
}

// drainListeners is Envoy's /drain_listeners: inboundonly limits it to listeners with
// traffic_direction INBOUND; graceful first runs the drain period.
func (s *Server) drainListeners(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	for k := range q {
		if k != "inboundonly" && k != "graceful" {
			http.Error(w, fmt.Sprintf("unknown parameter %q: want inboundonly, graceful", k), http.StatusBadRequest)
			return
		}
	}
	s.cfg.Source.DrainListeners(q.Has("inboundonly"), q.Has("graceful"))
	w.Header().Set("Content-Type", "text/plain; charset=UTF-8")
	_, _ = w.Write([]byte("OK\n"))
}

// logging is Envoy's /logging: GET (or POST without parameters) lists the levels; POST ?level=L
// sets every component, ?COMPONENT=L one of them.
func (s *Server) logging(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Logging == nil {
		http.Error(w, "logging is disabled", http.StatusNotImplemented)
		return
	}
	q := r.URL.Query()
	if r.Method == http.MethodPost && len(q) > 0 {
		keys := make([]string, 0, len(q))
		for k := range q {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		// level first, so ?level=info&http=debug leaves http at debug.
		if i := slices.Index(keys, "level"); i >= 0 {
			keys = append(append([]string{"level"}, keys[:i]...), keys[i+1:]...)
		}
		for _, k := range keys {
			var err error
			if k == "level" {
				err = s.cfg.Logging.SetAll(q.Get(k))
			} else {
				err = s.cfg.Logging.Set(k, q.Get(k))
			}
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
		}
	}
	w.Header().Set("Content-Type", "text/plain; charset=UTF-8")
	buf := []byte("active loggers:\n")
	for _, l := range s.cfg.Logging.Levels() {
		buf = append(buf, "  "...)
		buf = append(buf, l[0]...)
		buf = append(buf, ": "...)
		buf = append(buf, l[1]...)
		buf = append(buf, '\n')
	}
	_, _ = w.Write(buf)
}

func (s *Server) reopenLogs(w http.ResponseWriter, _ *http.Request) {
	if s.cfg.ReopenLogs == nil {
		http.Error(w, "reopen_logs is disabled", http.StatusNotImplemented)
		return
	}
	if err := s.cfg.ReopenLogs(); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	_, _ = w.Write([]byte("OK\n"))
}

func (s *Server) configDump(w http.ResponseWriter, _ *http.Request) {
	d, err := s.cfg.Source.ConfigDump()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	writeJSON(w, d)
}

// certs is Envoy's /certs: every certificate the proxy holds with its SANs, serial and validity.
func (s *Server) certs(w http.ResponseWriter, _ *http.Request) {
	c := &adminv3.Certificates{}
	if s.cfg.Certs != nil {
		c = s.cfg.Certs()
	}
	writeJSON(w, c)
}

// statsQuery reads Envoy's /stats query parameters: filter (a regex on the stat name) and usedonly.
func statsQuery(w http.ResponseWriter, r *http.Request) (filter *regexp.Regexp, usedOnly, ok bool) {
	q := r.URL.Query()
	if f := q.Get("filter"); f != "" {
		re, err := regexp.Compile(f)
		if err != nil {
			http.Error(w, fmt.Sprintf("invalid filter regex: %v", err), http.StatusBadRequest)
			return nil, false, false
		}
		filter = re
	}
	return filter, q.Has("usedonly"), true
}

func (s *Server) stats(w http.ResponseWriter, r *http.Request) {
	filter, usedOnly, ok := statsQuery(w, r)
	if !ok {
		return
	}
	snap := s.cfg.Stats.Snapshot(filter)
	if usedOnly {
		snap = slices.DeleteFunc(snap, func(st stats.Stat) bool { return !st.Used })
	}
	switch f := r.URL.Query().Get("format"); f {
	case "json":
		writeStatsJSON(w, snap)
	case "", "text":
		w.Header().Set("Content-Type", "text/plain; charset=UTF-8")
		_, _ = w.Write(stats.AppendText(nil, snap))
	case "prometheus":
		s.prometheus(w, r)
	default:
		http.Error(w, fmt.Sprintf("unsupported format %q: want json, text or prometheus", f), http.StatusBadRequest)
	}
}

func (s *Server) prometheus(w http.ResponseWriter, r *http.Request) {
	filter, usedOnly, ok := statsQuery(w, r)
	if !ok {
		return
	}
	w.Header().Set("Content-Type", stats.PrometheusContentType)
	_ = s.cfg.Stats.WritePrometheus(w, filter, usedOnly)
}
