package analyze

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"k8s.io/client-go/rest"

	"github.com/trellis-mesh/trellis/internal/config"
	"github.com/trellis-mesh/trellis/internal/kubesource"
	"github.com/trellis-mesh/trellis/internal/model"
)

// FromDir reads a config directory as `trellis control-plane --config-dir`
// does, but keeps the valid resources when some are not, so that both are
// analyzed; fields are located to their lines.
func FromDir(dir string) (Input, error) {
	p, err := config.LoadDirPartial(dir)
	if err != nil {
		return Input{}, err
	}
	return Input{Config: p.Config, Errors: p.Errors, Warnings: p.Warnings, Line: p.FieldLine}, nil
}

// FromCluster reads a cluster once as `trellis control-plane --kubeconfig`
// does: the first config the Kubernetes source delivers, and the problems
// of the resources it left out of it. istioNamespace "" is istio-system.
func FromCluster(ctx context.Context, rc *rest.Config, istioNamespace string) (Input, error) {
	src, err := kubesource.New(kubesource.Options{Config: rc, IstioNamespace: istioNamespace,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), ReadOnly: true})
	if err != nil {
		return Input{}, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		cfg  *model.Config
		errs []*config.ValidationError
	)
	// Watch calls onError, if at all, right after onConfig on its own
	// goroutine, and returns once ctx is done: cancelling in onConfig
	// stops it after the first config and its problems.
	err = src.Watch(ctx, func(c *model.Config) {
		if cfg == nil {
			cfg = c
		}
		cancel()
	}, func(err error) {
		if errs == nil {
			errs = config.ValidationErrors(err)
		}
	})
	if err != nil {
		return Input{}, err
	}
	if cfg == nil {
		return Input{}, fmt.Errorf("analyze %s: %w", rc.Host, context.Cause(ctx))
	}
	return Input{Config: cfg, Errors: errs, Cluster: true}, nil
}
