package ui

import (
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"strconv"
	"time"
)

// Options configure a Server. Config is required; the other sources may be
// nil, which shows nothing of their kind (and makes the console read-only
// without a Writer).
type Options struct {
	Config  ConfigSource
	Proxies ProxySource
	Traffic TrafficSource
	Writer  WeightWriter
	// Assets is the front-end, rooted where index.html is; nil (or one
	// without index.html) serves a placeholder page.
	Assets fs.FS
	Logger *slog.Logger // nil: slog.Default()
}

// Server serves the console: the JSON API under /api/ and the front-end.
type Server struct {
	opts Options
	log  *slog.Logger
	mux  *http.ServeMux
	// graph caches the latest /api/graph answer by its inputs.
	graph graphCache
}

// New returns the console's handler. It panics without Options.Config, a
// programming error.
func New(opts Options) *Server {
	if opts.Config == nil {
		panic("ui.New: Options.Config is nil")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	s := &Server{opts: opts, log: opts.Logger.With("component", "ui"), mux: http.NewServeMux()}
	s.mux.HandleFunc("GET /api/graph", s.handleGraph)
	s.mux.HandleFunc("GET /api/services", s.handleServices)
	s.mux.HandleFunc("GET /api/services/{namespace}/{name}", s.handleService)
	s.mux.HandleFunc("PUT /api/virtualservices/{namespace}/{name}/http/{index}/weights", s.handleWeights)
	s.mux.HandleFunc("GET /api/validation", s.handleValidation)
	s.mux.HandleFunc("GET /api/proxies", s.handleProxies)
	s.mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such API endpoint: "+r.Method+" "+r.URL.Path)
	})
	s.mux.Handle("/", assetHandler(opts.Assets))
	return s
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

func (s *Server) handleGraph(w http.ResponseWriter, _ *http.Request) {
	body := s.graphJSON(time.Now())
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	_, _ = w.Write(body)
}

func (s *Server) handleServices(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, servicesOf(s.opts.Config.Current().Snapshot))
}

func (s *Server) handleService(w http.ResponseWriter, r *http.Request) {
	ns, name := r.PathValue("namespace"), r.PathValue("name")
	view, ok := s.serviceView(s.opts.Config.Current().Snapshot, ns, name)
	if !ok {
		writeError(w, http.StatusNotFound, "no service "+ns+"/"+name)
		return
	}
	writeJSON(w, http.StatusOK, view)
}

func (s *Server) handleValidation(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, validationOf(s.opts.Config.Current().Rejected, s.opts.Config.Warnings()))
}

func (s *Server) handleProxies(w http.ResponseWriter, _ *http.Request) {
	var statuses []Proxy
	if s.opts.Proxies != nil {
		statuses = proxiesOf(s.opts.Proxies.Proxies())
	}
	if statuses == nil {
		statuses = []Proxy{}
	}
	writeJSON(w, http.StatusOK, statuses)
}

// maxBody bounds request bodies; a weights body is a few bytes.
const maxBody = 64 << 10

func decodeBody(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data after the JSON object")
	}
	return nil
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "encoding the answer: "+err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store") // live data
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(code)
	_, _ = w.Write(body)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	body, _ := json.Marshal(apiError{Error: msg})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(body)
}
