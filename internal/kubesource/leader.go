package kubesource

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// DefaultLeaseName is the coordination.k8s.io Lease the control plane's
// replicas compete for; its holder is the one replica that writes status
// and the root ConfigMaps. (Auto-registered WorkloadEntries are written by
// the replica their proxy is connected to, as istiod does.)
const DefaultLeaseName = "trellis-controlplane-leader"

// Lease timings: client-go's usual values, as istiod's (15 s, 10 s, 2 s).
const (
	DefaultLeaseDuration = 15 * time.Second
	DefaultRenewDeadline = 10 * time.Second
	DefaultRetryPeriod   = 2 * time.Second
)

// ElectorOptions configure an Elector; the zero value of each field means
// its default.
type ElectorOptions struct {
	Config *rest.Config // required
	// Namespace holds the Lease: $POD_NAMESPACE, else istio-system.
	Namespace string
	Name      string // DefaultLeaseName if ""
	// Identity names this replica in the Lease: $POD_NAME, else the host
	// name plus a random suffix (two replicas must never share one).
	Identity                                  string
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
	Logger                                    *slog.Logger
}

// Elector is one replica's side of the leader election that guards writes:
// every replica serves xDS, only the Lease holder writes.
type Elector struct {
	opts   ElectorOptions
	lock   resourcelock.Interface
	leader atomic.Bool

	mu        sync.Mutex
	onElected []func()
}

// NewElector makes an Elector; it campaigns once Run is called.
func NewElector(opts ElectorOptions) (*Elector, error) {
	if opts.Config == nil {
		return nil, errors.New("leader election: a rest config is required")
	}
	if opts.Namespace == "" {
		opts.Namespace = os.Getenv("POD_NAMESPACE")
	}
	if opts.Namespace == "" {
		opts.Namespace = DefaultIstioNamespace
	}
	if opts.Name == "" {
		opts.Name = DefaultLeaseName
	}
	if opts.Identity == "" {
		opts.Identity = os.Getenv("POD_NAME")
	}
	if opts.Identity == "" {
		host, _ := os.Hostname()
		var b [4]byte
		_, _ = rand.Read(b[:])
		opts.Identity = host + "_" + hex.EncodeToString(b[:])
	}
	if opts.LeaseDuration == 0 {
		opts.LeaseDuration = DefaultLeaseDuration
	}
	if opts.RenewDeadline == 0 {
		opts.RenewDeadline = DefaultRenewDeadline
	}
	if opts.RetryPeriod == 0 {
		opts.RetryPeriod = DefaultRetryPeriod
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	kube, err := kubernetes.NewForConfig(opts.Config)
	if err != nil {
		return nil, fmt.Errorf("leader election: %w", err)
	}
	lock, err := resourcelock.New(resourcelock.LeasesResourceLock, opts.Namespace, opts.Name,
		kube.CoreV1(), kube.CoordinationV1(), resourcelock.ResourceLockConfig{Identity: opts.Identity})
	if err != nil {
		return nil, fmt.Errorf("leader election: %w", err)
	}
	return &Elector{opts: opts, lock: lock}, nil
}

// Identity is this replica's name in the Lease.
func (e *Elector) Identity() string { return e.opts.Identity }

// IsLeader reports whether this replica holds the Lease now. A nil Elector
// is a lone replica: always the leader.
func (e *Elector) IsLeader() bool { return e == nil || e.leader.Load() }

// OnElected registers f, called each time this replica becomes the
// leader (and at once if it leads now), so that writers catch up on what
// they held back as followers. f must not block: it only signals.
func (e *Elector) OnElected(f func()) {
	if e == nil {
		return
	}
	e.mu.Lock()
	e.onElected = append(e.onElected, f)
	e.mu.Unlock()
	if e.leader.Load() {
		f()
	}
}

// Run campaigns until ctx is done, again after each lost term; the Lease
// is released on the way out so that another replica takes over at once.
// The channel closes when it has stopped.
func (e *Elector) Run(ctx context.Context) <-chan struct{} {
	done := make(chan struct{})
	if e == nil {
		close(done)
		return done
	}
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
				Lock:            e.lock,
				LeaseDuration:   e.opts.LeaseDuration,
				RenewDeadline:   e.opts.RenewDeadline,
				RetryPeriod:     e.opts.RetryPeriod,
				ReleaseOnCancel: true,
				Name:            e.opts.Name,
				Callbacks: leaderelection.LeaderCallbacks{
					OnStartedLeading: func(context.Context) {
						e.leader.Store(true)
						e.opts.Logger.Info("leader election: leading; this replica writes to the cluster",
							"lease", e.opts.Namespace+"/"+e.opts.Name, "identity", e.opts.Identity)
						e.mu.Lock()
						fs := append([]func(){}, e.onElected...)
						e.mu.Unlock()
						for _, f := range fs {
							f()
						}
					},
					OnStoppedLeading: func() {
						if e.leader.Swap(false) {
							e.opts.Logger.Info("leader election: no longer leading", "identity", e.opts.Identity)
						}
					},
				},
			})
			if err != nil {
				e.opts.Logger.Error("leader election: cannot run; this replica never writes", "error", err)
				return
			}
			le.Run(ctx) // returns when the term is lost or ctx is done
		}
	}()
	return done
}
