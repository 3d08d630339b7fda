package controlplane

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/trellis-mesh/trellis/internal/autoscope"
	"github.com/trellis-mesh/trellis/internal/model"
	"github.com/trellis-mesh/trellis/internal/translate"
	"github.com/trellis-mesh/trellis/internal/ui"
	"github.com/trellis-mesh/trellis/internal/xds"
)

// autoScoper feeds what the proxies' metrics say into automatic scoping
// and re-pushes when a learned scope changes. Nil when Options.AutoScope
// is empty; its methods then pass snapshots through untouched.
type autoScoper struct {
	learner *autoscope.Learner
	scraper *ui.Scraper
	srv     *xds.Server
	log     *slog.Logger

	mu  sync.Mutex
	cfg *model.Config   // the accepted config, re-derived on scope changes
	cur *model.Snapshot // the snapshot last handed to srv
}

// In Kubernetes mode there is always one, since a namespace may opt in
// with the autoscope.Label at any time.
func newAutoScoper(opts Options, srv *xds.Server) *autoScoper {
	if len(opts.AutoScope) == 0 && opts.Kubernetes == nil {
		return nil
	}
	a := &autoScoper{
		learner: autoscope.New(autoscope.Options{Namespaces: opts.AutoScope, TTL: opts.AutoScopeTTL}),
		srv:     srv,
		log:     opts.Logger,
	}
	a.scraper = ui.NewScraper(ui.ScraperOptions{Proxies: optedIn{a}, Logger: opts.Logger, Port: opts.AutoScopeMetricsPort,
		Interval: opts.AutoScopeInterval})
	return a
}

// optedIn lists the proxies to scrape: all of them while any namespace is
// opted in, none otherwise (no labelled namespace: no scraping).
type optedIn struct{ a *autoScoper }

func (o optedIn) Proxies() []xds.ProxyStatus {
	o.a.mu.Lock()
	cur := o.a.cur
	o.a.mu.Unlock()
	if !o.a.learner.Any(cur) {
		return nil
	}
	return o.a.srv.Proxies()
}

// apply builds the snapshot for cfg with the current learned scopes
// attached and hands it to the xDS server. One lock covers both, so a
// re-push of learned scopes never overtakes a newer config. The snapshot
// reuses the services of prev (or of the last one applied here) that cfg
// did not change, which keeps an endpoint change cheap at scale.
func (a *autoScoper) apply(srv *xds.Server, cfg *model.Config, prev *model.Snapshot) *model.Snapshot {
	if a == nil {
		snap := model.NewSnapshotFrom(prev, cfg)
		srv.Update(snap)
		return snap
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cur != nil {
		prev = a.cur
	}
	snap := model.NewSnapshotFrom(prev, cfg)
	translate.SetAutoScope(snap, a.learner.Sidecars(snap))
	a.cfg, a.cur = cfg, snap
	srv.Update(snap)
	return snap
}

// run scrapes the proxies and, whenever a namespace's learned hosts
// change, hands the xDS server a new snapshot of the same config: proxies
// whose resources did not change are not pushed (xds compares hashes).
func (a *autoScoper) run(ctx context.Context, interval time.Duration) <-chan struct{} {
	done := make(chan struct{})
	if a == nil {
		close(done)
		return done
	}
	if interval <= 0 {
		interval = 2 * time.Second
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		a.scraper.Run(ctx)
	}()
	go func() {
		defer close(done)
		defer wg.Wait()
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			a.observe(time.Now())
		}
	}()
	return done
}

func (a *autoScoper) observe(now time.Time) {
	a.mu.Lock()
	cur, cfg := a.cur, a.cfg
	a.mu.Unlock()
	if cur == nil {
		return
	}
	if !a.learner.Observe(a.scraper.Traffic(), cur, now) {
		return
	}
	a.log.Info("auto-scope: learned dependencies changed; re-translating", "learned", a.learner.Learned())
	a.mu.Lock()
	stale := a.cfg != cfg // a newer config was applied meanwhile, with these scopes
	a.mu.Unlock()
	if !stale {
		a.apply(a.srv, cfg, nil)
	}
}

// serveDebug answers GET /debug/autoscope: for every opted-in namespace
// its learned hosts, and the synthetic Sidecar in effect as YAML a user can
// apply to freeze it (?namespace=NS gives that one YAML alone).
func (a *autoScoper) serveDebug(w http.ResponseWriter, r *http.Request) {
	if a == nil {
		http.Error(w, "automatic scoping is off (controlplane --auto-scope)", http.StatusNotFound)
		return
	}
	a.mu.Lock()
	cur := a.cur
	a.mu.Unlock()
	type entry struct {
		Learned []string `json:"learned"`
		Sidecar string   `json:"sidecar"`
	}
	out := map[string]entry{}
	learned := a.learner.Learned()
	if cur != nil {
		for ns, sc := range translate.AutoScope(cur) {
			out[ns] = entry{Learned: learned[ns], Sidecar: autoscope.YAML(sc)}
		}
	}
	if ns := r.URL.Query().Get("namespace"); ns != "" {
		e, ok := out[ns]
		if !ok {
			http.Error(w, "namespace "+ns+" is not auto-scoped", http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "application/yaml")
		io.WriteString(w, e.Sidecar)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(out)
}
