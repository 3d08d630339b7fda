package ui

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/trellis-mesh/trellis/internal/model"
)

// DefaultAddress is where `trellis up` serves the console.
const DefaultAddress = "127.0.0.1:15080"

// ConsoleOptions configure the console of one control plane.
type ConsoleOptions struct {
	Address   string // port 0 picks a free one
	ConfigDir string // where the config is read from and weights written to
	Proxies   ProxySource
	// Assets is the front-end; nil: the one built into the binary.
	Assets fs.FS
	Logger *slog.Logger
	// Scrape tunes the traffic scraper; zero values take its defaults.
	Scrape ScraperOptions
	// Writer writes weight changes back to the config's source; nil: the
	// files of ConfigDir.
	Writer WeightWriter
}

// Console is a control plane's console: a Server fed by a ConfigTracker,
// a Scraper and a FileWriter, listening on its address.
type Console struct {
	tracker *ConfigTracker
	scraper *Scraper
	server  *Server
	lis     net.Listener
	log     *slog.Logger
}

// Listen binds the console's address; Serve serves it.
func Listen(opts ConsoleOptions) (*Console, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Assets == nil {
		opts.Assets = builtinAssets()
	}
	lis, err := net.Listen("tcp", opts.Address)
	if err != nil {
		return nil, fmt.Errorf("console: listen on %s: %w", opts.Address, err)
	}
	tracker := NewConfigTracker(opts.ConfigDir)
	so := opts.Scrape
	so.Proxies, so.Config, so.Logger = opts.Proxies, tracker, opts.Logger
	scraper := NewScraper(so)
	writer := opts.Writer
	if writer == nil {
		writer = NewFileWriter(opts.ConfigDir)
	}
	server := New(Options{
		Config:  tracker,
		Proxies: opts.Proxies,
		Traffic: scraper,
		Writer:  writer,
		Assets:  opts.Assets,
		Logger:  opts.Logger,
	})
	return &Console{tracker: tracker, scraper: scraper, server: server, lis: lis, log: opts.Logger}, nil
}

// Addr is the address the console listens on.
func (c *Console) Addr() net.Addr { return c.lis.Addr() }

// Accept shows an accepted snapshot (controlplane's OnConfig).
func (c *Console) Accept(snap *model.Snapshot) { c.tracker.Accept(snap) }

// Reject shows a rejected config's errors (controlplane's OnConfigError).
func (c *Console) Reject(err error) { c.tracker.Reject(err) }

// Serve serves the console and scrapes the proxies until ctx is done, and
// returns once both have stopped.
func (c *Console) Serve(ctx context.Context) error {
	srv := &http.Server{Handler: c.server, ReadHeaderTimeout: 10 * time.Second}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		c.scraper.Run(ctx)
	}()
	go func() {
		defer wg.Done()
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			_ = srv.Close()
		}
	}()
	err := srv.Serve(c.lis)
	wg.Wait()
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("console: %w", err)
}
