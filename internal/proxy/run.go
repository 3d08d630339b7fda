package proxy

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	"google.golang.org/protobuf/proto"

	"github.com/trellis-mesh/trellis/internal/proxy/admin"
	"github.com/trellis-mesh/trellis/internal/proxy/server"
	"github.com/trellis-mesh/trellis/internal/proxy/stats"
	"github.com/trellis-mesh/trellis/internal/proxy/xdsclient"
)

// Defaults.
const (
	DefaultAdminAddress  = "127.0.0.1:15000"
	DefaultDrainDuration = 5 * time.Second
)

// Options configures a proxy run.
type Options struct {
	// XDSAddress is the control plane's host:port (plaintext ADS). Empty means the bootstrap's
	// ads_config cluster, or no control plane at all (static config only).
	XDSAddress string
	// NodeID is the xDS node ID, e.g. "sidecar~127.0.1.3~reviews-v1.default~default.svc.cluster.local".
	NodeID string
	// Cluster is node.cluster; empty derives it from the node ID ("reviews-v1.default").
	Cluster string
	// Metadata is merged into node.metadata as strings (e.g. INTERCEPTION_MODE=NONE).
	Metadata map[string]string
	// AdminAddress is used when the bootstrap has no admin.address; default 127.0.0.1:15000.
	AdminAddress string
	// BootstrapPath is an Envoy bootstrap file (YAML or JSON); Bootstrap gives one directly instead.
	BootstrapPath string
	Bootstrap     *bootstrapv3.Bootstrap
	// DrainDuration bounds the graceful drain of listeners on shutdown; default 5s.
	DrainDuration time.Duration
	Logger        *slog.Logger
	// OnStarted, if set, is called once the admin server and the static listeners are up, with the
	// admin server's bound address.
	OnStarted func(adminAddress string)
}

// Run runs a proxy until ctx is cancelled (or POST /quitquitquit), then stops accepting, drains the
// requests in flight within DrainDuration, and returns nil. It returns an error early when the
// configuration is invalid or a socket cannot be bound.
func Run(ctx context.Context, opts Options) error {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	if opts.DrainDuration <= 0 {
		opts.DrainDuration = DefaultDrainDuration
	}
	b := &bootstrapv3.Bootstrap{}
	switch {
	case opts.Bootstrap != nil:
		b = proto.Clone(opts.Bootstrap).(*bootstrapv3.Bootstrap)
	case opts.BootstrapPath != "":
		var err error
		if b, err = LoadBootstrap(opts.BootstrapPath); err != nil {
			return err
		}
	}
	node := buildNode(b.GetNode(), &opts)
	b.Node = node
	xdsAddr, err := xdsAddress(b, opts.XDSAddress)
	if err != nil {
		return err
	}
	if xdsAddr != "" && node.GetId() == "" {
		return errors.New("a node ID is required to talk to a control plane (--node-id or the bootstrap's node.id)")
	}
	log = log.With("node", node.GetId())

	var client atomic.Pointer[xdsclient.Client]
	store := stats.NewStore()
	p := server.New(server.Options{
		Logger:       log,
		Stats:        store,
		DrainTimeout: opts.DrainDuration,
		WaitForLDS:   xdsAddr != "",
		WaitForCDS:   xdsAddr != "",
		Versions: func(typeURL string) string {
			if c := client.Load(); c != nil {
				return c.Status().Types[typeURL].AckedVersion
			}
			return ""
		},
	})
	store.GaugeFunc("control_plane.connected_state", func() int64 {
		if c := client.Load(); c != nil && c.Status().Connected {
			return 1
		}
		return 0
	})
	stopCtx := func() {
		sctx, cancel := context.WithTimeout(context.Background(), opts.DrainDuration)
		defer cancel()
		_ = p.Shutdown(sctx)
	}
	if err := p.ApplyBootstrap(b); err != nil {
		stopCtx()
		return err
	}

	ctx, quit := context.WithCancel(ctx)
	defer quit()
	adm := admin.New(admin.Config{
		Address: adminAddress(b, opts.AdminAddress),
		Source:  p,
		Stats:   store,
		Logger:  log.With("component", "admin"),
		Quit:    quit,
	})
	if err := adm.Start(); err != nil {
		stopCtx()
		return err
	}

	var wg sync.WaitGroup
	if xdsAddr != "" {
		c := xdsclient.New(xdsclient.Config{Address: xdsAddr, Node: node, Watcher: p, Logger: log})
		client.Store(c)
		p.SetSubscriber(c)
		wg.Go(func() {
			if err := c.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
				log.Error("xDS client stopped", "error", err)
			}
		})
	}
	log.Info("trellis-proxy started", "xds", xdsAddr, "admin", adm.Addr())
	if opts.OnStarted != nil {
		opts.OnStarted(adm.Addr())
	}

	<-ctx.Done()
	log.Info("trellis-proxy draining", "drain", opts.DrainDuration)
	// Admin stays up while listeners drain, so /ready reports DRAINING; a little slack over the
	// drain duration lets the listener manager close what is left itself.
	dctx, cancel := context.WithTimeout(context.Background(), opts.DrainDuration+time.Second)
	defer cancel()
	if err := p.Shutdown(dctx); err != nil {
		log.Warn("drain incomplete", "error", err)
	}
	wg.Wait()
	if err := adm.Shutdown(dctx); err != nil {
		log.Warn("admin shutdown", "error", err)
	}
	log.Info("trellis-proxy stopped")
	return nil
}
