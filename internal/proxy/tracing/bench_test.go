package tracing

import (
	"context"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/proxy/stats"
	"github.com/trellis-mesh/trellis/internal/proxy/streaminfo"
	"github.com/trellis-mesh/trellis/internal/proxy/upstream"
)

// BenchmarkTracedRequest is the per-request cost of tracing: Start from an incoming traceparent,
// Inject into the upstream headers, Finish into the export queue (whose exporter drops the spans:
// there is no collector cluster).
func BenchmarkTracedRequest(b *testing.B) {
	reg := NewRegistry(func(string) *upstream.Cluster { return nil }, stats.NewStore(), slog.New(slog.DiscardHandler))
	b.Cleanup(func() { _ = reg.Close(context.Background()) })
	tr := reg.Tracer(&Config{Provider: OpenTelemetry, RandomSampling: 10000, OverallSampling: 10000, ClientSampling: 10000,
		Collector: Collector{Provider: OpenTelemetry, Transport: GRPC, Cluster: "none"}})
	in := http.Header{"Traceparent": {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}, "X-Request-Id": {"4bf92f35-77b3-4da6-a3ce-929d0e0e4736"}}
	info := streaminfo.Info{Start: time.Now(), Method: "GET", Path: "/", Authority: "a", ResponseCode: 200, RequestHeaders: in}
	out := http.Header{}
	b.ReportAllocs()
	for b.Loop() {
		var s Span
		tr.Start(&s, in)
		tr.Inject(&s, out)
		tr.Finish(&s, &info)
	}
}
