package controlplane

import (
	"context"
	"log/slog"
	"os"
	"time"

	"github.com/trellis-mesh/trellis/internal/autoregister"
	"github.com/trellis-mesh/trellis/internal/kubesource"
	"github.com/trellis-mesh/trellis/internal/model"
)

// autoRegRetry is how soon a failed write of auto-registered entries is
// retried.
const autoRegRetry = 5 * time.Second

// autoRegistration wires WorkloadEntry auto-registration: the xDS server's
// connect hooks feed the controller; in file mode its entries are merged
// into the served config, in Kubernetes mode written to the API server.
type autoRegistration struct {
	ctrl    *autoregister.Controller
	writer  *autoregister.KubeWriter // nil in file mode
	elector *kubesource.Elector
	log     *slog.Logger

	// Kubernetes mode: how often the leader sweeps entries left behind by
	// a replica that crashed, and the maximum connection age its rules use
	// (see autoregister.Stale).
	sweepEvery, maxConnAge time.Duration

	changed chan struct{}
}

func newAutoRegistration(opts Options, elector *kubesource.Elector) (*autoRegistration, error) {
	a := &autoRegistration{changed: make(chan struct{}, 1), log: opts.Logger, elector: elector}
	identity, _ := os.Hostname()
	if elector != nil {
		identity = elector.Identity()
	}
	a.ctrl = autoregister.New(autoregister.Options{GracePeriod: opts.AutoRegisterGrace, Identity: identity, Logger: opts.Logger,
		OnChange: func() {
			select {
			case a.changed <- struct{}{}:
			default:
			}
		}})
	a.sweepEvery = opts.AutoRegisterSweepInterval
	if a.sweepEvery <= 0 {
		a.sweepEvery = 10 * a.ctrl.GracePeriod() // istiod's periodicWorkloadEntryCleanup
	}
	if opts.Kubernetes != nil {
		w, err := autoregister.NewKubeWriter(opts.Kubernetes, identity)
		if err != nil {
			return nil, err
		}
		a.writer = w
	}
	return a, nil
}

// accept takes a config from the source and returns the one to serve.
func (a *autoRegistration) accept(cfg *model.Config) *model.Config {
	a.ctrl.SetGroups(cfg.WorkloadGroups)
	if a.writer != nil {
		return cfg // the entries come back through the Kubernetes source
	}
	return autoregister.Merge(cfg, a.ctrl.Entries())
}

// run drives the controller and, on each change of its entries, writes
// them (Kubernetes) or has the last config re-applied with them (files).
func (a *autoRegistration) run(ctx context.Context, reapply func()) <-chan struct{} {
	done := make(chan struct{})
	ctrlDone := a.ctrl.Run(ctx)
	go func() {
		defer close(done)
		defer func() { <-ctrlDone }()
		var retry <-chan time.Time // after a failed write
		var sweep <-chan time.Time
		if a.writer != nil {
			t := time.NewTicker(a.sweepEvery)
			defer t.Stop()
			sweep = t.C
		}
		for {
			select {
			case <-ctx.Done():
				return
			case <-sweep:
				a.sweepStale(ctx)
				continue
			case <-a.changed:
			case <-retry:
			}
			retry = nil
			if a.writer != nil {
				if err := a.writer.Sync(ctx, a.ctrl.Entries()); err != nil && ctx.Err() == nil {
					a.log.Warn("auto-registration: could not write WorkloadEntries; retrying", "in", autoRegRetry, "error", err)
					retry = time.After(autoRegRetry)
				}
				continue
			}
			reapply()
		}
	}()
	return done
}

// sweepStale deletes, on the leader, the auto-registered entries that a
// crashed replica left behind (istiod's periodic cleanup).
func (a *autoRegistration) sweepStale(ctx context.Context) {
	if !a.elector.IsLeader() {
		return
	}
	deleted, err := a.writer.CleanStale(ctx, time.Now(), a.ctrl.GracePeriod(), a.maxConnAge, a.ctrl.Entries())
	for _, key := range deleted {
		a.log.Info("auto-registration: deleted a WorkloadEntry no replica looks after", "workload_entry", key)
	}
	if err != nil && ctx.Err() == nil {
		a.log.Warn("auto-registration: sweep of stale WorkloadEntries failed", "error", err)
	}
}
