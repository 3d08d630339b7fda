package localmesh

import (
	"context"
	"log/slog"
	"time"

	"github.com/trellis-mesh/trellis/internal/proxy"
)

// drainDuration bounds how long a stopping proxy waits for its in-flight
// requests; short, since a local mesh stops at a developer's Ctrl-C.
const drainDuration = 2 * time.Second

// runProxy runs one in-process trellis-proxy until ctx is done. In-process
// keeps `go run ./cmd/trellis up` a single build; each proxy still talks to
// the control plane over real gRPC and serves on real sockets.
func runProxy(ctx context.Context, s proxySpec, xdsAddress string, log *slog.Logger) error {
	return proxy.Run(ctx, proxy.Options{
		XDSAddress:    xdsAddress,
		NodeID:        s.NodeID,
		Metadata:      map[string]string{"INTERCEPTION_MODE": "NONE"},
		AdminAddress:  s.AdminAddress,
		DrainDuration: drainDuration,
		Logger:        log,
	})
}
