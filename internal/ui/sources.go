package ui

import (
	"context"
	"sync"
	"time"

	"github.com/trellis-mesh/trellis/internal/config"
	"github.com/trellis-mesh/trellis/internal/model"
	"github.com/trellis-mesh/trellis/internal/xds"
)

// ConfigSource yields the config the console shows.
type ConfigSource interface {
	// Current is called on every request; it must be cheap.
	Current() ConfigState
	// Warnings are the current config's warnings, for /api/validation.
	Warnings() []config.Warning
}

// ConfigState is the accepted config and what is wrong with the latest one.
type ConfigState struct {
	Snapshot *model.Snapshot // latest accepted; nil before the first
	// Rejected is why the latest load was refused (an errors.Join of
	// *config.ValidationError, usually); nil once a later one is accepted.
	Rejected error
}

// ProxySource yields the proxies' xDS sync state; *xds.Server is one.
type ProxySource interface {
	Proxies() []xds.ProxyStatus
}

// TrafficSource yields the traffic seen over the latest window; the Scraper
// is one. Traffic may return nil when nothing has been measured yet.
type TrafficSource interface {
	Traffic() *Traffic
}

// Traffic is the measured part of the graph: edges and the nodes seen in
// metrics. The Server adds every workload known from config.
type Traffic struct {
	At            time.Time
	WindowSeconds float64
	Nodes         []Node
	Edges         []Edge
}

// WeightWriter writes new weights for one HTTP route of a VirtualService
// back to where the resource came from. It returns the whole config as it
// will be once the change is applied. An error wrapping *InvalidChange
// means the change was refused and nothing was written.
type WeightWriter interface {
	SetWeights(ctx context.Context, vs *model.VirtualService, http int, weights []int32) (*model.Config, error)
	// Editable reports whether vs can be written back.
	Editable(vs *model.VirtualService) bool
}

// InvalidChange is a change the config would not accept.
type InvalidChange struct{ Err error }

func (e *InvalidChange) Error() string { return e.Err.Error() }
func (e *InvalidChange) Unwrap() error { return e.Err }

// ConfigTracker is the ConfigSource of a control plane: feed it every
// accepted snapshot and every rejected config (controlplane.Options'
// OnConfig and OnConfigError). Warnings are read from Dir on demand, once
// per change, since the watcher only logs them.
type ConfigTracker struct {
	dir string

	mu       sync.Mutex
	snap     *model.Snapshot
	rejected error
	gen      uint64 // bumped on every Accept and Reject
	warnGen  uint64 // gen the warnings were read at
	warnings []config.Warning
}

// NewConfigTracker returns a tracker for the config directory dir ("" for
// none: no warnings).
func NewConfigTracker(dir string) *ConfigTracker { return &ConfigTracker{dir: dir} }

// Accept records a new accepted snapshot; the latest rejection is over.
func (t *ConfigTracker) Accept(snap *model.Snapshot) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.snap, t.rejected = snap, nil
	t.gen++
}

// Reject records why the latest config was refused.
func (t *ConfigTracker) Reject(err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.rejected = err
	t.gen++
}

// Current implements ConfigSource.
func (t *ConfigTracker) Current() ConfigState {
	t.mu.Lock()
	defer t.mu.Unlock()
	return ConfigState{Snapshot: t.snap, Rejected: t.rejected}
}

// Warnings implements ConfigSource.
func (t *ConfigTracker) Warnings() []config.Warning {
	t.mu.Lock()
	gen, fresh, warnings := t.gen, t.gen == t.warnGen, t.warnings
	t.mu.Unlock()
	if fresh || t.dir == "" {
		return warnings
	}
	// Loading again is the only way to the warnings: the watcher logs them
	// and hands on only the config. Not under the lock, so that Accept
	// (the watcher's goroutine) never waits for it.
	_, warnings, _ = config.LoadDir(t.dir)
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.gen == gen {
		t.warnings, t.warnGen = warnings, gen
	}
	return warnings
}
