package controlplane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/trellis-mesh/trellis/internal/cpdebug"
	"github.com/trellis-mesh/trellis/internal/xds"
)

// DefaultDebugAddress is istiod's monitoring and debug port, on loopback:
// the debug endpoints show every proxy's identity and the whole config.
const DefaultDebugAddress = "127.0.0.1:15014"

// telemetry is one control plane instance's metrics: its own registry, so
// that several instances (tests, `trellis up` beside a test) never share
// counters.
type telemetry struct {
	registry *prometheus.Registry
	xds      *xds.Metrics
	state    *cpdebug.State
}

func newTelemetry() *telemetry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return &telemetry{registry: reg, xds: xds.NewMetrics(reg), state: cpdebug.NewState(reg)}
}

// debugServer serves the telemetry on the debug address.
type debugServer struct {
	http   *http.Server
	lis    net.Listener
	served chan error
}

// listenDebug binds addr; "" disables the debug server (nil, nil).
func listenDebug(addr string, t *telemetry, srv *xds.Server, scoper *autoScoper, log *slog.Logger) (*debugServer, error) {
	if addr == "" {
		return nil, nil
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("control plane: debug listen on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/", cpdebug.Handler(cpdebug.Options{Gatherer: t.registry, Proxies: srv.Proxies, State: t.state}))
	mux.HandleFunc("/debug/autoscope", scoper.serveDebug)
	var h http.Handler = mux
	d := &debugServer{
		http:   &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second},
		lis:    lis,
		served: make(chan error, 1),
	}
	go func() { d.served <- d.http.Serve(lis) }()
	log.Info("serving metrics and debug endpoints", "address", lis.Addr().String())
	return d, nil
}

// addr is where the server listens; nil for a disabled one.
func (d *debugServer) addr() net.Addr {
	if d == nil {
		return nil
	}
	return d.lis.Addr()
}

// shutdown stops the server and waits for its goroutine.
func (d *debugServer) shutdown(ctx context.Context) error {
	if d == nil {
		return nil
	}
	err := d.http.Shutdown(ctx)
	if serr := <-d.served; !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	return err
}
