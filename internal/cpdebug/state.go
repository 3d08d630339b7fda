package cpdebug

import (
	"errors"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/trellis-mesh/trellis/internal/model"
)

// State records what became of each config the control plane loaded: the
// latest accepted one (for /debug/configz) and the errors of the latest
// rejected one (for /debug/config_errors), and keeps the config metrics.
// Its methods are safe for concurrent use.
type State struct {
	mu         sync.Mutex
	config     *model.Config
	appliedAt  time.Time
	rejected   []string // messages of the latest load, if it was rejected
	rejectedAt time.Time

	passed         prometheus.Counter
	failed         prometheus.Counter
	triggers       prometheus.Counter
	currentErrors  prometheus.Gauge
	services       prometheus.Gauge
	virtualService prometheus.Gauge
}

// NewState returns an empty State whose metrics are registered with reg
// (nil: kept but exported nowhere).
func NewState(reg prometheus.Registerer) *State {
	triggers := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pilot_push_triggers",
		Help: "Total number of times a push was triggered, labeled by reason for the push.",
	}, []string{"type"})
	s := &State{
		triggers: triggers.WithLabelValues("config"),
		// istiod counts these per resource at its validation webhook; a
		// Trellis config directory is validated whole, so one count per load.
		passed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "galley_validation_passed",
			Help: "Config loads that passed validation and were applied.",
		}),
		failed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "galley_validation_failed",
			Help: "Config loads rejected by validation; the last good config keeps serving.",
		}),
		currentErrors: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "trellis_config_errors",
			Help: "Errors in the latest config load: 0 when it was applied, else how many problems rejected it.",
		}),
		services: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pilot_services",
			Help: "Total services known to pilot.",
		}),
		virtualService: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pilot_virt_services",
			Help: "Total virtual services known to pilot.",
		}),
	}
	if reg != nil {
		reg.MustRegister(s.passed, s.failed, triggers, s.currentErrors, s.services, s.virtualService)
	}
	return s
}

// Applied records an accepted config and the snapshot built from it.
func (s *State) Applied(cfg *model.Config, snap *model.Snapshot) {
	s.passed.Inc()
	s.triggers.Inc()
	s.currentErrors.Set(0)
	s.services.Set(float64(len(snap.Services)))
	s.virtualService.Set(float64(len(cfg.VirtualServices)))
	s.mu.Lock()
	defer s.mu.Unlock()
	s.config, s.appliedAt = cfg, time.Now()
	s.rejected, s.rejectedAt = nil, time.Time{}
}

// Rejected records a config load that failed; err is config's error, one
// joined error per problem.
func (s *State) Rejected(err error) {
	msgs := messages(err)
	s.failed.Inc()
	s.currentErrors.Set(float64(len(msgs)))
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rejected, s.rejectedAt = msgs, time.Now()
}

// Ready reports whether a config has been applied, so proxies get config.
func (s *State) Ready() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.config != nil
}

func (s *State) snapshot() (cfg *model.Config, rejected []string, rejectedAt time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.config, s.rejected, s.rejectedAt
}

// messages splits a joined error into its one-line problems.
func messages(err error) []string {
	var joined interface{ Unwrap() []error }
	if errors.As(err, &joined) && len(joined.Unwrap()) > 0 {
		var out []string
		for _, e := range joined.Unwrap() {
			out = append(out, e.Error())
		}
		return out
	}
	return []string{err.Error()}
}
