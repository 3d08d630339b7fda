package ui

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/trellis-mesh/trellis/internal/model"
)

// ScraperOptions configure a Scraper.
type ScraperOptions struct {
	Proxies ProxySource  // whom to scrape: every connected proxy
	Config  ConfigSource // for MeshConfig's defaultConfig.statusPort
	Logger  *slog.Logger

	Interval    time.Duration // 0: 2 s
	Window      time.Duration // 0: DefaultWindow
	Timeout     time.Duration // per scrape; 0: 1 s
	Concurrency int           // scrapes at once; 0: 16
	// Port replaces MeshConfig's status port; 0: the mesh's (default 15020).
	Port   int
	Client *http.Client // nil: a plain client
}

// MetricsPath is where proxies serve Istio's metrics, on the status port.
const MetricsPath = "/stats/prometheus"

// maxMetricsBody bounds one scrape; a proxy with thousands of series
// serves a few MB.
const maxMetricsBody = 32 << 20

// Scraper polls every connected proxy's Prometheus endpoint and turns the
// samples into Traffic over a sliding window.
type Scraper struct {
	opts    ScraperOptions
	traffic atomic.Pointer[Traffic]

	mu      sync.Mutex // guards proxies; held by one scrape round at a time
	proxies map[string]*proxySamples
}

// NewScraper returns a Scraper; Run drives it.
func NewScraper(opts ScraperOptions) *Scraper {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Interval <= 0 {
		opts.Interval = 2 * time.Second
	}
	if opts.Window <= 0 {
		opts.Window = DefaultWindow
	}
	if opts.Timeout <= 0 {
		opts.Timeout = time.Second
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = 16
	}
	if opts.Client == nil {
		opts.Client = &http.Client{}
	}
	return &Scraper{opts: opts, proxies: map[string]*proxySamples{}}
}

// Traffic implements TrafficSource.
func (s *Scraper) Traffic() *Traffic { return s.traffic.Load() }

// Run scrapes at once and then every Interval until ctx is done.
func (s *Scraper) Run(ctx context.Context) {
	t := time.NewTicker(s.opts.Interval)
	defer t.Stop()
	for {
		s.scrape(ctx, time.Now())
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// scrape polls every connected proxy once, records the samples as taken
// at now, and recomputes the traffic over the window ending now.
func (s *Scraper) scrape(ctx context.Context, now time.Time) {
	if s.opts.Proxies == nil {
		return
	}
	port := s.opts.Port
	if port == 0 {
		port = 15020
		if s.opts.Config != nil {
			if snap := s.opts.Config.Current().Snapshot; snap != nil {
				if p := snap.Config.Mesh.GetDefaultConfig().GetStatusPort(); p != 0 {
					port = int(p)
				}
			}
		}
	}
	type target struct {
		proxy *model.Proxy
		url   string
	}
	var targets []target
	for _, st := range s.opts.Proxies.Proxies() {
		if st.Streams == 0 {
			continue
		}
		p, err := model.ParseProxy(st.ID)
		if err != nil {
			continue
		}
		targets = append(targets, target{p, "http://" + net.JoinHostPort(p.IP, strconv.Itoa(port)) + MetricsPath})
	}

	results := make([]*scrapeResult, len(targets))
	sem := make(chan struct{}, s.opts.Concurrency)
	var wg sync.WaitGroup
	for i, tg := range targets {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			res, err := s.fetch(ctx, tg.url)
			if err != nil {
				s.opts.Logger.Debug("console: scrape failed", "proxy", tg.proxy.ID, "url", tg.url, "error", err)
				return
			}
			results[i] = res
		}()
	}
	wg.Wait()

	s.mu.Lock()
	defer s.mu.Unlock()
	live := map[string]bool{}
	for i, tg := range targets {
		live[tg.proxy.ID] = true
		ps := s.proxies[tg.proxy.ID]
		if ps == nil {
			ps = &proxySamples{proxy: tg.proxy}
			s.proxies[tg.proxy.ID] = ps
		}
		if results[i] != nil {
			ps.add(now, results[i], s.opts.Window)
		}
	}
	for id := range s.proxies {
		if !live[id] {
			delete(s.proxies, id) // disconnected: its samples say nothing more
		}
	}
	s.traffic.Store(aggregate(s.proxies, now, s.opts.Window))
}

func (s *Scraper) fetch(ctx context.Context, url string) (*scrapeResult, error) {
	ctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	resp, err := s.opts.Client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s", resp.Status)
	}
	return parseMetrics(io.LimitReader(resp.Body, maxMetricsBody))
}
