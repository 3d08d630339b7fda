// Package tracetest runs trace collectors for tests: an OTLP/gRPC receiver (a real
// collector/trace/v1 TraceService on a gRPC server) and a Zipkin v2 JSON receiver (an HTTP server on
// /api/v2/spans), both on loopback port 0, both recording the spans they receive in one form. It is
// imported by tests only.
package tracetest

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	collectortracev1 "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracev1 "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
)

// Span is a received span, whichever the protocol.
type Span struct {
	TraceID, ID, ParentID string // lower-case hex; ParentID "" for a root
	Name                  string
	Kind                  string // "SERVER", "CLIENT"
	Service               string // OTLP resource service.name, Zipkin localEndpoint.serviceName
	Shared                bool   // Zipkin's shared flag
	Error                 bool   // OTLP status ERROR
	Tags                  map[string]string
}

// Receiver records spans.
type Receiver struct {
	// Addr is host:port of the receiver.
	Addr string
	// Requests counts export calls.
	mu       sync.Mutex
	spans    []Span
	requests int
}

// Spans returns the spans received so far.
func (r *Receiver) Spans() []Span {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.spans)
}

// Requests is the number of export calls received.
func (r *Receiver) Requests() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.requests
}

// WaitSpans polls until pred holds for the received spans, or fails the test after timeout.
func (r *Receiver) WaitSpans(t testing.TB, timeout time.Duration, what string, pred func([]Span) bool) []Span {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		s := r.Spans()
		if pred(s) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v, %s: got %d spans: %+v", timeout, what, len(s), s)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (r *Receiver) add(s []Span) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.requests++
	r.spans = append(r.spans, s...)
}

type otlpServer struct {
	collectortracev1.UnimplementedTraceServiceServer
	r *Receiver
}

func (o *otlpServer) Export(_ context.Context, req *collectortracev1.ExportTraceServiceRequest) (*collectortracev1.ExportTraceServiceResponse, error) {
	var out []Span
	for _, rs := range req.GetResourceSpans() {
		service := ""
		for _, a := range rs.GetResource().GetAttributes() {
			if a.GetKey() == "service.name" {
				service = a.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				sp := Span{
					TraceID: hex.EncodeToString(s.GetTraceId()), ID: hex.EncodeToString(s.GetSpanId()),
					ParentID: hex.EncodeToString(s.GetParentSpanId()), Name: s.GetName(), Service: service,
					Error: s.GetStatus().GetCode() == tracev1.Status_STATUS_CODE_ERROR, Tags: map[string]string{},
				}
				switch s.GetKind() {
				case tracev1.Span_SPAN_KIND_SERVER:
					sp.Kind = "SERVER"
				case tracev1.Span_SPAN_KIND_CLIENT:
					sp.Kind = "CLIENT"
				default:
					sp.Kind = s.GetKind().String()
				}
				for _, a := range s.GetAttributes() {
					sp.Tags[a.GetKey()] = a.GetValue().GetStringValue()
				}
				out = append(out, sp)
			}
		}
	}
	o.r.add(out)
	return &collectortracev1.ExportTraceServiceResponse{}, nil
}

// OTLP starts an OTLP/gRPC trace receiver on ip:0 (ip "" is 127.0.0.1), stopped at cleanup.
func OTLP(t testing.TB, ip string) *Receiver {
	t.Helper()
	lis := listen(t, ip)
	r := &Receiver{Addr: lis.Addr().String()}
	srv := grpc.NewServer()
	collectortracev1.RegisterTraceServiceServer(srv, &otlpServer{r: r})
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(lis)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	return r
}

// zipkinSpan is Zipkin v2's JSON span.
type zipkinSpan struct {
	TraceID       string                       `json:"traceId"`
	ID            string                       `json:"id"`
	ParentID      string                       `json:"parentId"`
	Name          string                       `json:"name"`
	Kind          string                       `json:"kind"`
	Shared        bool                         `json:"shared"`
	LocalEndpoint struct{ ServiceName string } `json:"localEndpoint"`
	Tags          map[string]string            `json:"tags"`
}

// Zipkin starts a Zipkin v2 JSON receiver (POST /api/v2/spans) on ip:0, stopped at cleanup.
func Zipkin(t testing.TB, ip string) *Receiver {
	t.Helper()
	lis := listen(t, ip)
	r := &Receiver{Addr: lis.Addr().String()}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method != http.MethodPost || req.URL.Path != "/api/v2/spans" {
			http.Error(w, "want POST /api/v2/spans", http.StatusNotFound)
			return
		}
		body, _ := io.ReadAll(req.Body)
		var in []zipkinSpan
		if err := json.Unmarshal(body, &in); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		out := make([]Span, 0, len(in))
		for _, z := range in {
			out = append(out, Span{TraceID: z.TraceID, ID: z.ID, ParentID: z.ParentID, Name: z.Name, Kind: z.Kind,
				Service: z.LocalEndpoint.ServiceName, Shared: z.Shared, Tags: z.Tags})
		}
		r.add(out)
		w.WriteHeader(http.StatusAccepted)
	})}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(lis)
	}()
	t.Cleanup(func() {
		_ = srv.Close()
		<-done
	})
	return r
}

func listen(t testing.TB, ip string) net.Listener {
	t.Helper()
	if ip == "" {
		ip = "127.0.0.1"
	}
	lis, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	return lis
}
