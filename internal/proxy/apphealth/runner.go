package apphealth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Config configures a Runner.
type Config struct {
	// Probe is the application's readiness probe; it must be valid.
	Probe *Probe
	// ProxyReady is the proxy's own readiness, what /healthz/ready answers: while the proxy is not
	// ready (still waiting for its config, or draining), every check fails with its state, as with
	// Istio's EnvoyProber. Nil checks the application alone.
	ProxyReady func() (state string, ready bool)
	// Report is called on each transition, from Run's goroutine: healthy with an empty message, or
	// unhealthy with the failed check's message. It should return promptly.
	Report func(healthy bool, message string)
	// Logger gets one info line per transition; nil means slog.Default().
	Logger *slog.Logger
}

// Runner checks a probe periodically and reports its transitions. Create it with New, start it
// with Run.
type Runner struct {
	cfg     Config
	probe   Probe // with Istio's defaults
	checker *checker
	log     *slog.Logger

	// second is the unit of initialDelaySeconds and periodSeconds, so that tests can walk through
	// thresholds in milliseconds. timeoutSeconds stays in real seconds: it bounds real I/O.
	second time.Duration
}

// New returns a Runner for cfg, or an error when the probe is missing or invalid.
func New(cfg Config) (*Runner, error) {
	if cfg.Probe == nil {
		return nil, errors.New("apphealth: no probe")
	}
	if err := cfg.Probe.Validate(); err != nil {
		return nil, fmt.Errorf("apphealth: %w", err)
	}
	if cfg.Report == nil {
		return nil, errors.New("apphealth: no Report")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	p := cfg.Probe.withDefaults()
	return &Runner{cfg: cfg, probe: p, checker: newChecker(p), log: log, second: time.Second}, nil
}

// Run waits initialDelaySeconds, checks at once and then every periodSeconds until ctx is done.
// Like Istio's agent it starts unhealthy without reporting it: the first report is "healthy", once
// successThreshold checks in a row pass; after that, failureThreshold failures in a row report
// "unhealthy", and so on, one report per transition.
func (r *Runner) Run(ctx context.Context) {
	r.log.Info("application health check starting", "check", r.describe(),
		"initial_delay", time.Duration(r.probe.InitialDelaySeconds)*r.second,
		"period", time.Duration(r.probe.PeriodSeconds)*r.second)
	if !sleep(ctx, time.Duration(r.probe.InitialDelaySeconds)*r.second) {
		return
	}
	t := tracker{successThreshold: r.probe.SuccessThreshold, failureThreshold: r.probe.FailureThreshold}
	step := func() bool {
		err := r.checkOnce(ctx)
		if ctx.Err() != nil {
			return false // a check cut short by shutdown says nothing about the app
		}
		if err != nil {
			r.log.Debug("application health check failed", "error", err)
		} else {
			r.log.Debug("application health check passed")
		}
		if t.observe(err) {
			if t.healthy {
				r.log.Info("application healthy", "check", r.describe())
				r.cfg.Report(true, "")
			} else {
				r.log.Info("application unhealthy", "check", r.describe(), "reason", err.Error())
				r.cfg.Report(false, err.Error())
			}
		}
		return true
	}
	if !step() {
		return
	}
	// Started after the first check, as the agent's ticker: a slow first check does not bring the
	// second one forward.
	tick := time.NewTicker(time.Duration(r.probe.PeriodSeconds) * r.second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if !step() {
			return
		}
	}
}

// checkOnce is the agent's aggregate: the proxy's own readiness first, then the application.
func (r *Runner) checkOnce(ctx context.Context) error {
	if r.cfg.ProxyReady != nil {
		if state, ready := r.cfg.ProxyReady(); !ready {
			return fmt.Errorf("proxy not ready: %s", state)
		}
	}
	cctx, cancel := context.WithTimeout(ctx, time.Duration(r.probe.TimeoutSeconds)*time.Second)
	defer cancel()
	return r.checker.check(cctx)
}

// describe names the check in logs.
func (r *Runner) describe() string {
	switch p := r.probe; {
	case p.HTTPGet != nil:
		return fmt.Sprintf("httpGet %s://%s:%d%s", p.HTTPGet.Scheme, p.HTTPGet.Host, p.HTTPGet.Port, p.HTTPGet.Path)
	case p.TCPSocket != nil:
		return fmt.Sprintf("tcpSocket %s:%d", p.TCPSocket.Host, p.TCPSocket.Port)
	case p.Exec != nil:
		return fmt.Sprintf("exec %q", p.Exec.Command)
	case p.GRPC != nil:
		return fmt.Sprintf("grpc port %d service %q", p.GRPC.Port, p.GRPC.Service)
	}
	return "none"
}

// tracker is the agent's threshold logic (PerformApplicationHealthCheck): consecutive results
// counted, a report only when a threshold is reached and the state changes.
type tracker struct {
	successThreshold, failureThreshold int
	successes, failures                int
	// healthy is the last reported state. It starts false and unreported: nothing is said until
	// the application has been healthy once.
	healthy bool
}

// observe counts one check result and reports whether the state changed (then t.healthy is the
// new state, to be reported).
func (t *tracker) observe(err error) bool {
	if err == nil {
		t.successes++
		t.failures = 0
		if t.successes >= t.successThreshold && !t.healthy {
			t.successes, t.healthy = 0, true
			return true
		}
		return false
	}
	t.failures++
	t.successes = 0
	if t.failures >= t.failureThreshold && t.healthy {
		t.failures, t.healthy = 0, false
		return true
	}
	return false
}

// sleep waits d or until ctx is done, reporting whether it waited the whole d.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
