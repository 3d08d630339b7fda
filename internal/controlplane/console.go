package controlplane

import (
	"context"
	"fmt"
	"log/slog"
	"net"

	istioclient "istio.io/client-go/pkg/clientset/versioned"

	"github.com/trellis-mesh/trellis/internal/model"
	"github.com/trellis-mesh/trellis/internal/ui"
	"github.com/trellis-mesh/trellis/internal/xds"
)

// console is the optional ui.Console; its methods do nothing when nil.
type console struct{ c *ui.Console }

func startConsole(opts Options, srv *xds.Server) (console, error) {
	if opts.UIAddress == "" {
		return console{}, nil
	}
	co := ui.ConsoleOptions{Address: opts.UIAddress, ConfigDir: opts.ConfigDir, Proxies: srv, Logger: opts.Logger}
	if opts.Kubernetes != nil {
		// Weight changes go back to the cluster, where the source reads them.
		client, err := istioclient.NewForConfig(opts.Kubernetes)
		if err != nil {
			return console{}, fmt.Errorf("control plane: console: %w", err)
		}
		co.Writer = ui.NewKubeWriter(client)
	}
	c, err := ui.Listen(co)
	if err != nil {
		return console{}, fmt.Errorf("control plane: %w", err)
	}
	return console{c}, nil
}

// serve runs the console until ctx is done; the channel closes once it has
// stopped.
func (c console) serve(ctx context.Context, log *slog.Logger) <-chan struct{} {
	done := make(chan struct{})
	if c.c == nil {
		close(done)
		return done
	}
	go func() {
		defer close(done)
		if err := c.c.Serve(ctx); err != nil {
			log.Error("console stopped", "error", err)
		}
	}()
	return done
}

func (c console) addr() net.Addr {
	if c.c == nil {
		return nil
	}
	return c.c.Addr()
}

func (c console) accept(snap *model.Snapshot) {
	if c.c != nil {
		c.c.Accept(snap)
	}
}

func (c console) reject(err error) {
	if c.c != nil {
		c.c.Reject(err)
	}
}
