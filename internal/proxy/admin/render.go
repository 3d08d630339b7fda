package admin

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strconv"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/trellis-mesh/trellis/internal/proxy/stats"
)

// Envoy keeps proto field names (snake_case) in its admin JSON.
var jsonOpts = protojson.MarshalOptions{Multiline: true, Indent: "  ", UseProtoNames: true}

func writeJSON(w http.ResponseWriter, m proto.Message) {
	b, err := jsonOpts.Marshal(m)
	if err != nil {
		http.Error(w, fmt.Sprintf("marshal: %v", err), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(append(b, '\n'))
}

func writeStatsJSON(w http.ResponseWriter, snap []stats.Stat) {
	type stat struct {
		Name  string `json:"name"`
		Value int64  `json:"value"`
	}
	out := struct {
		Stats []stat `json:"stats"`
	}{Stats: make([]stat, 0, len(snap))}
	for _, s := range snap {
		out.Stats = append(out.Stats, stat{Name: s.Name, Value: s.Value})
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}

func (s *Server) listeners(w http.ResponseWriter, r *http.Request) {
	infos := s.cfg.Source.Listeners()
	if r.URL.Query().Get("format") == "json" {
		out := &adminv3.Listeners{}
		for _, l := range infos {
			out.ListenerStatuses = append(out.ListenerStatuses, &adminv3.ListenerStatus{
				Name: l.Name, LocalAddress: socketAddress(l.Address),
			})
		}
		writeJSON(w, out)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=UTF-8")
	for _, l := range infos {
		fmt.Fprintf(w, "%s::%s\n", l.Name, l.Address)
	}
}

func (s *Server) clusters(w http.ResponseWriter, r *http.Request) {
	clusters := s.cfg.Source.Clusters()
	if r.URL.Query().Get("format") == "json" {
		out := &adminv3.Clusters{}
		for _, c := range clusters {
			cs := &adminv3.ClusterStatus{Name: c.Name(), AddedViaApi: true}
			for _, h := range c.Hosts() {
				health := corev3.HealthStatus_HEALTHY
				if !h.Healthy() {
					health = corev3.HealthStatus_UNHEALTHY
				}
				cs.HostStatuses = append(cs.HostStatuses, &adminv3.HostStatus{
					Address: socketAddress(h.Address),
					Stats: []*adminv3.SimpleMetric{
						{Type: adminv3.SimpleMetric_COUNTER, Name: "rq_total", Value: h.RequestsTotal()},
						{Type: adminv3.SimpleMetric_COUNTER, Name: "rq_error", Value: h.RequestErrors()},
						{Type: adminv3.SimpleMetric_GAUGE, Name: "rq_active", Value: uint64(max(h.RequestsActive(), 0))},
					},
					HealthStatus: &adminv3.HostHealthStatus{EdsHealthStatus: health},
					Weight:       h.Weight(),
					Priority:     h.Priority(),
				})
			}
			out.ClusterStatuses = append(out.ClusterStatuses, cs)
		}
		writeJSON(w, out)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=UTF-8")
	for _, c := range clusters {
		for _, h := range c.Hosts() {
			p := c.Name() + "::" + h.Address + "::"
			flags := "healthy"
			if !h.Healthy() {
				flags = "/failed_eds_health"
			}
			fmt.Fprintf(w, "%srq_active::%d\n%srq_error::%d\n%srq_total::%d\n%shealth_flags::%s\n%sweight::%d\n%spriority::%d\n",
				p, h.RequestsActive(), p, h.RequestErrors(), p, h.RequestsTotal(), p, flags, p, h.Weight(), p, h.Priority())
		}
	}
}

func socketAddress(hostport string) *corev3.Address {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return nil
	}
	n, _ := strconv.ParseUint(port, 10, 32)
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(n)},
	}}}
}
