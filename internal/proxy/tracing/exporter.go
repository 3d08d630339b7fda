package tracing

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/trellis-mesh/trellis/internal/proxy/stats"
	"github.com/trellis-mesh/trellis/internal/proxy/upstream"
)

// Export tuning. Envoy flushes every 5s or at 5 spans; trellis-proxy flushes every second so a
// trace shows up promptly, and in batches of up to maxBatch spans.
const (
	queueSize     = 4096
	maxBatch      = 512
	flushInterval = time.Second
	exportTimeout = 5 * time.Second
)

// Registry owns the proxy's exporters: one background goroutine per collector, shared by every
// connection manager that names it and kept across config pushes. Close stops them all.
type Registry struct {
	clusters func(name string) *upstream.Cluster
	store    *stats.Store
	log      *slog.Logger
	node     atomic.Pointer[Node]

	mu        sync.Mutex
	exporters map[Collector]*exporter
	closed    bool
	wg        sync.WaitGroup
	done      chan struct{}
}

// NewRegistry returns a registry that reaches collectors through clusters (the proxy's running
// clusters by name) and counts into store (tracing.<provider>.*).
func NewRegistry(clusters func(string) *upstream.Cluster, store *stats.Store, log *slog.Logger) *Registry {
	r := &Registry{clusters: clusters, store: store, log: log, exporters: map[Collector]*exporter{}, done: make(chan struct{})}
	r.node.Store(&Node{})
	return r
}

// SetNode records the proxy's node ID, zone and cluster (from the bootstrap's node).
func (r *Registry) SetNode(n Node) { r.node.Store(&n) }

// Tracer returns the tracer for cfg, starting its collector's exporter if it is new. A nil cfg, or
// a closed registry, gives nil (no tracing).
func (r *Registry) Tracer(cfg *Config) *Tracer {
	if cfg == nil || r == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	e := r.exporters[cfg.Collector]
	if e == nil {
		e = r.newExporter(cfg.Collector)
		r.exporters[cfg.Collector] = e
		r.wg.Go(e.run)
	}
	return &Tracer{cfg: cfg, exp: e, node: r.node.Load()}
}

// Close flushes what is queued (bounded by ctx) and stops every exporter.
func (r *Registry) Close(ctx context.Context) error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	r.mu.Unlock()
	stopped := make(chan struct{})
	go func() {
		r.wg.Wait()
		close(stopped)
	}()
	close(r.done) // exporters flush once more, then return
	select {
	case <-stopped:
		return nil
	case <-ctx.Done():
		for _, e := range r.exporters {
			e.cancel()
		}
		<-stopped
		return ctx.Err()
	}
}

// exporterStats are Envoy's tracing.<provider>.* counters, plus spans_dropped for the queue.
type exporterStats struct {
	spansSent, spansDropped, timerFlushed                   *stats.Counter
	reportsSent, reportsFailed, reportsDropped, skippedNoCl *stats.Counter
}

type exporter struct {
	col    Collector
	reg    *Registry
	queue  chan *record
	stats  exporterStats
	ctx    context.Context
	cancel context.CancelFunc
	// encode turns a batch into a request body and its content type.
	encode func([]*record) ([]byte, error)
}

func (r *Registry) newExporter(c Collector) *exporter {
	p := "tracing." + c.Provider.String() + "."
	ctx, cancel := context.WithCancel(context.Background())
	e := &exporter{
		col: c, reg: r, queue: make(chan *record, queueSize), ctx: ctx, cancel: cancel,
		stats: exporterStats{
			spansSent:      r.store.Counter(p + "spans_sent"),
			spansDropped:   r.store.Counter(p + "spans_dropped"),
			timerFlushed:   r.store.Counter(p + "timer_flushed"),
			reportsSent:    r.store.Counter(p + "reports_sent"),
			reportsFailed:  r.store.Counter(p + "reports_failed"),
			reportsDropped: r.store.Counter(p + "reports_dropped"),
			skippedNoCl:    r.store.Counter(p + "reports_skipped_no_cluster"),
		},
	}
	switch {
	case c.Provider == Zipkin:
		e.encode = e.zipkinJSON
	case c.Transport == GRPC:
		e.encode = e.otlpGRPC
	default:
		e.encode = e.otlpHTTP
	}
	return e
}

// enqueue hands a finished span to the exporter without waiting: a full queue drops it.
func (e *exporter) enqueue(r *record) {
	select {
	case e.queue <- r:
	default:
		e.stats.spansDropped.Inc()
		putRecord(r)
	}
}

func (e *exporter) run() {
	defer e.cancel()
	t := time.NewTicker(flushInterval)
	defer t.Stop()
	batch := make([]*record, 0, maxBatch)
	flush := func() {
		if len(batch) == 0 {
			return
		}
		e.export(batch)
		for i, r := range batch {
			putRecord(r)
			batch[i] = nil
		}
		batch = batch[:0]
	}
	for {
		select {
		case r := <-e.queue:
			batch = append(batch, r)
			if len(batch) == maxBatch {
				flush()
			}
		case <-t.C:
			if len(batch) > 0 {
				e.stats.timerFlushed.Inc()
			}
			flush()
		case <-e.reg.done:
			for {
				select {
				case r := <-e.queue:
					batch = append(batch, r)
					if len(batch) == maxBatch {
						flush()
					}
				default:
					flush()
					return
				}
			}
		}
	}
}

// contentTypes by encoder.
const (
	contentGRPC     = "application/grpc"
	contentProtobuf = "application/x-protobuf"
	contentJSON     = "application/json"
)

// export sends one batch to the collector through its cluster, as one request.
func (e *exporter) export(batch []*record) {
	body, err := e.encode(batch)
	if err != nil {
		e.stats.reportsDropped.Inc()
		e.reg.log.Warn("tracing: encoding spans failed", "provider", e.col.Provider.String(), "error", err)
		return
	}
	cl := e.reg.clusters(e.col.Cluster)
	if cl == nil {
		e.stats.skippedNoCl.Inc()
		e.reg.log.Debug("tracing: collector cluster not found; spans dropped", "cluster", e.col.Cluster, "spans", len(batch))
		return
	}
	if err := e.send(cl, body); err != nil {
		e.stats.reportsFailed.Inc()
		e.reg.log.Warn("tracing: exporting spans failed", "provider", e.col.Provider.String(), "cluster", e.col.Cluster, "spans", len(batch), "error", err)
		return
	}
	e.stats.reportsSent.Inc()
	e.stats.spansSent.Add(uint64(len(batch)))
}

var errNoHost = errors.New("no healthy host")

func (e *exporter) send(cl *upstream.Cluster, body []byte) error {
	grpc := e.col.Provider == OpenTelemetry && e.col.Transport == GRPC
	if grpc && cl.Config().Protocol == upstream.HTTP1 {
		return fmt.Errorf("cluster %q speaks HTTP/1.1 only; OTLP/gRPC needs HTTP/2 (http2_protocol_options)", cl.Name())
	}
	host := cl.Pick()
	if host == nil {
		cl.Stats.NoneHealthy.Inc()
		return errNoHost
	}
	if !cl.TryRequest() {
		return errors.New("circuit breaker open (max_requests)")
	}
	defer cl.ReleaseRequest()
	ctx, cancel := context.WithTimeout(e.ctx, exportTimeout)
	defer cancel()
	authority := e.col.Authority
	if authority == "" {
		authority = cl.Name()
	}
	u := &url.URL{Scheme: "http", Host: host.Target(), Opaque: e.col.Path}
	req := (&http.Request{
		Method: http.MethodPost, URL: u, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: http.Header{}, Host: authority, Body: io.NopCloser(bytes.NewReader(body)), ContentLength: int64(len(body)),
	}).WithContext(ctx)
	if grpc {
		req.Header["Content-Type"] = []string{contentGRPC}
		req.Header["Te"] = []string{"trailers"}
	} else if e.col.Provider == Zipkin {
		req.Header["Content-Type"] = []string{contentJSON}
	} else {
		req.Header["Content-Type"] = []string{contentProtobuf}
	}
	host.Begin()
	cl.Stats.RqTotal.Inc()
	resp, err := cl.Transport(grpc).RoundTrip(req)
	if err != nil {
		host.End(true)
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	host.End(resp.StatusCode >= 500)
	cl.Stats.RecordStatus(resp.StatusCode)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("collector answered %s", resp.Status)
	}
	if grpc {
		st := resp.Trailer.Get("Grpc-Status")
		if st == "" {
			st = resp.Header.Get("Grpc-Status") // trailers-only answer
		}
		if st != "0" {
			msg, _ := url.PathUnescape(strings.TrimSpace(resp.Trailer.Get("Grpc-Message") + resp.Header.Get("Grpc-Message")))
			return fmt.Errorf("collector answered grpc-status %q: %s", st, msg)
		}
	}
	return nil
}

var records = sync.Pool{New: func() any { return new(record) }}

func getRecord() *record { return records.Get().(*record) }

func putRecord(r *record) {
	custom := r.custom[:0]
	*r = record{custom: custom}
	records.Put(r)
}
