package cpdebug

import (
	"bytes"
	"encoding/json"
	"net/http"
	"time"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/trellis-mesh/trellis/internal/xds"
)

// Options are what the handler serves from.
type Options struct {
	Gatherer prometheus.Gatherer      // /metrics
	Proxies  func() []xds.ProxyStatus // /debug/syncz; xds.Server.Proxies
	State    *State                   // config outcomes
}

// Handler serves the debug endpoints. JSON endpoints indent their output
// when the query has "pretty", as istiod's do.
func Handler(o Options) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(o.Gatherer, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, _ *http.Request) {
		if !o.State.Ready() {
			http.Error(w, "no config applied yet", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /debug/syncz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, r, syncz(o.Proxies()))
	})
	mux.HandleFunc("GET /debug/configz", func(w http.ResponseWriter, r *http.Request) {
		cfg, _, _ := o.State.snapshot()
		out, err := configz(cfg)
		if err != nil {
			writeError(w, http.StatusInternalServerError, err)
			return
		}
		writeJSON(w, r, out)
	})
	mux.HandleFunc("GET /debug/mesh", func(w http.ResponseWriter, r *http.Request) {
		cfg, _, _ := o.State.snapshot()
		if cfg == nil || cfg.Mesh == nil {
			writeError(w, http.StatusServiceUnavailable, errNoConfig)
			return
		}
		raw, err := specJSON(cfg.Mesh)
		if err != nil {
			writeError(w, http.StatusInternalServerError, err)
			return
		}
		writeJSON(w, r, raw)
	})
	mux.HandleFunc("GET /debug/config_errors", func(w http.ResponseWriter, r *http.Request) {
		_, msgs, at := o.State.snapshot()
		out := ConfigErrors{OK: len(msgs) == 0, Errors: msgs}
		if out.Errors == nil {
			out.Errors = []string{}
		}
		if !at.IsZero() {
			out.RejectedAt = &at
		}
		writeJSON(w, r, out)
	})
	return mux
}

// SyncStatus is one proxy's entry in /debug/syncz: istiod's shape
// (pilot/pkg/xds/debug.go), so tools that read istiod's syncz read ours,
// with Trellis's additions at the end. The *_sent/*_acked fields hold
// content-hash versions where istiod has nonces; equal means in sync either
// way.
type SyncStatus struct {
	ClusterID     string `json:"cluster_id,omitempty"`
	ProxyID       string `json:"proxy,omitempty"`
	ProxyVersion  string `json:"proxy_version,omitempty"`
	IstioVersion  string `json:"istio_version,omitempty"`
	ClusterSent   string `json:"cluster_sent,omitempty"`
	ClusterAcked  string `json:"cluster_acked,omitempty"`
	ListenerSent  string `json:"listener_sent,omitempty"`
	ListenerAcked string `json:"listener_acked,omitempty"`
	RouteSent     string `json:"route_sent,omitempty"`
	RouteAcked    string `json:"route_acked,omitempty"`
	EndpointSent  string `json:"endpoint_sent,omitempty"`
	EndpointAcked string `json:"endpoint_acked,omitempty"`

	// Trellis additions.
	ConnectedAt time.Time `json:"connected_at"`
	// LastNACK is the proxy's latest rejection, if any; it stays after
	// the proxy later ACKs a good version, as a record.
	LastNACK *NACK `json:"last_nack,omitempty"`
	// LastError is why the control plane could not build this proxy's
	// latest config (it keeps its previous one); "" when it could.
	LastError string `json:"last_error,omitempty"`
}

// NACK is a proxy's rejection of a response.
type NACK struct {
	TypeURL string    `json:"type_url"`
	Version string    `json:"version,omitempty"`
	Message string    `json:"message"`
	At      time.Time `json:"at"`
}

// ConfigErrors is /debug/config_errors: whether the latest config load was
// applied, and if not, each problem that rejected it
// (file:line: Kind ns/name: field.path: reason), while the last good config
// keeps serving.
type ConfigErrors struct {
	OK         bool       `json:"ok"`
	RejectedAt *time.Time `json:"rejectedAt,omitempty"`
	Errors     []string   `json:"errors"`
}

// syncz lists connected proxies, as istiod does (a proxy whose streams
// have all closed is left out, though the server still holds its config
// for a while in case it comes back).
func syncz(proxies []xds.ProxyStatus) []SyncStatus {
	out := make([]SyncStatus, 0, len(proxies))
	for _, p := range proxies {
		if p.Streams == 0 {
			continue
		}
		s := SyncStatus{
			ClusterID:     p.ClusterID,
			ProxyID:       p.ID,
			ProxyVersion:  p.IstioVersion,
			IstioVersion:  p.IstioVersion,
			ClusterSent:   p.Sent[resourcev3.ClusterType],
			ClusterAcked:  p.Acked[resourcev3.ClusterType],
			ListenerSent:  p.Sent[resourcev3.ListenerType],
			ListenerAcked: p.Acked[resourcev3.ListenerType],
			RouteSent:     p.Sent[resourcev3.RouteType],
			RouteAcked:    p.Acked[resourcev3.RouteType],
			EndpointSent:  p.Sent[resourcev3.EndpointType],
			EndpointAcked: p.Acked[resourcev3.EndpointType],
			ConnectedAt:   p.ConnectedAt,
			LastError:     p.LastError,
		}
		if n := p.LastNACK; n != nil {
			s.LastNACK = &NACK{TypeURL: n.TypeURL, Version: n.Version, Message: n.Message, At: n.At}
		}
		out = append(out, s)
	}
	return out
}

func writeJSON(w http.ResponseWriter, r *http.Request, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	if r.URL.Query().Has("pretty") {
		enc.SetIndent("", "  ")
	}
	if err := enc.Encode(v); err != nil {
		writeError(w, http.StatusInternalServerError, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(buf.Bytes())
}

func writeError(w http.ResponseWriter, code int, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
}
