package accesslog

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// flushInterval is how often buffered lines reach the file (Envoy's file_flush_interval_msec
	// default is 1s).
	flushInterval = time.Second
	// kickSize wakes the flusher early once this much is buffered.
	kickSize = 64 << 10
	// maxBuffered bounds what waits for a slow disk; lines beyond it are dropped, never waited on.
	maxBuffered = 4 << 20
)

// Files holds one buffered writer per access log path, shared by every logger writing there, and
// the goroutine that flushes them. Its methods are safe for concurrent use.
type Files struct {
	stdout, stderr io.Writer

	mu      sync.Mutex
	sinks   map[string]*sink
	kick    chan struct{}
	stop    chan struct{}
	done    chan struct{}
	running bool
}

// Default is the process's set of access log files, which Parse uses; the process owns its flusher
// (trellis up runs several proxies in one process, all writing through it). Call Default.Flush
// before exiting.
var Default = NewFiles(nil, nil)

// NewFiles returns an empty set whose /dev/stdout and /dev/stderr (and the stdout and stderr
// loggers) write to stdout and stderr; nil means the process's.
func NewFiles(stdout, stderr io.Writer) *Files {
	if stdout == nil {
		stdout = os.Stdout
	}
	if stderr == nil {
		stderr = os.Stderr
	}
	return &Files{stdout: stdout, stderr: stderr, sinks: map[string]*sink{}, kick: make(chan struct{}, 1)}
}

// sink is one path's buffer. Requests append under mu; only the flusher (or Flush/Close) writes to
// the file, under wmu, so a request never waits on the disk.
type sink struct {
	path    string
	kick    chan struct{}
	dropped atomic.Uint64

	mu     sync.Mutex
	buf    []byte
	spare  []byte
	closed bool

	wmu     sync.Mutex
	w       io.Writer // nil until the file is first opened
	file    *os.File  // nil for stdout and stderr
	failing bool      // the last open or write failed (logged once per failure spell)
}

// open returns the sink for path. The file itself is opened (append, create) by the first flush,
// not here: parsing config must not touch the file system (parsers are fuzzed, and a NACKed or
// replaced config would leave files behind). Unlike Envoy, a path that cannot be opened is
// therefore reported in the proxy's log rather than rejecting the config.
func (f *Files) open(path string) *sink {
	f.mu.Lock()
	defer f.mu.Unlock()
	if s := f.sinks[path]; s != nil {
		return s
	}
	s := &sink{path: path, kick: f.kick}
	switch path {
	case "/dev/stdout":
		s.w = f.stdout
	case "/dev/stderr":
		s.w = f.stderr
	}
	f.sinks[path] = s
	if !f.running {
		f.running = true
		f.stop, f.done = make(chan struct{}), make(chan struct{})
		go f.flushLoop(f.stop, f.done)
	}
	return s
}

func (f *Files) flushLoop(stop, done chan struct{}) {
	defer close(done)
	t := time.NewTicker(flushInterval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		case <-f.kick:
		}
		_ = f.Flush()
	}
}

func (f *Files) all() []*sink {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]*sink, 0, len(f.sinks))
	for _, s := range f.sinks {
		out = append(out, s)
	}
	return out
}

// Flush writes everything buffered.
func (f *Files) Flush() error {
	var errs []error
	for _, s := range f.all() {
		errs = append(errs, s.flush())
	}
	return errors.Join(errs...)
}

// Reopen flushes and reopens every file, for log rotation (Envoy's /reopen_logs).
func (f *Files) Reopen() error {
	var errs []error
	for _, s := range f.all() {
		errs = append(errs, s.reopen())
	}
	return errors.Join(errs...)
}

// Close stops the flusher, flushes and closes every file. Loggers still holding a closed file drop
// their lines; a later Parse opens the file again.
func (f *Files) Close() error {
	f.mu.Lock()
	sinks := f.sinks
	f.sinks = map[string]*sink{}
	stop, done, running := f.stop, f.done, f.running
	f.running = false
	f.mu.Unlock()
	if running {
		close(stop)
		<-done
	}
	var errs []error
	for _, s := range sinks {
		errs = append(errs, s.close())
	}
	return errors.Join(errs...)
}

// Dropped is how many lines were dropped because the file fell too far behind, over all paths.
func (f *Files) Dropped() uint64 {
	var n uint64
	for _, s := range f.all() {
		n += s.dropped.Load()
	}
	return n
}

func (s *sink) write(line []byte) {
	s.mu.Lock()
	if s.closed || len(s.buf)+len(line) > maxBuffered {
		s.mu.Unlock()
		s.dropped.Add(1)
		return
	}
	s.buf = append(s.buf, line...)
	full := len(s.buf) >= kickSize
	s.mu.Unlock()
	if full {
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
}

func (s *sink) flush() error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	return s.flushLocked()
}

func (s *sink) flushLocked() error {
	s.mu.Lock()
	b := s.buf
	s.buf = s.spare[:0]
	s.mu.Unlock()
	var err error
	if len(b) > 0 {
		if s.w == nil {
			if file, oerr := os.OpenFile(s.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644); oerr == nil {
				s.w, s.file = file, file
			} else {
				err = fmt.Errorf("open access log: %w", oerr)
			}
		}
		if s.w != nil {
			if _, werr := s.w.Write(b); werr != nil {
				err = fmt.Errorf("access log %s: %w", s.path, werr)
			}
		}
		if err != nil {
			s.dropped.Add(uint64(bytesLines(b)))
		}
		s.report(err)
	}
	s.mu.Lock()
	s.spare = b[:0]
	s.mu.Unlock()
	return err
}

func (s *sink) reopen() error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	err := s.flushLocked()
	if s.file == nil {
		return err
	}
	// The next flush opens the path afresh.
	_ = s.file.Close()
	s.w, s.file = nil, nil
	return err
}

func (s *sink) close() error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.mu.Lock()
	s.closed = true // first, so no line lands after the last flush
	s.mu.Unlock()
	err := s.flushLocked()
	if s.file != nil {
		err = errors.Join(err, s.file.Close())
	}
	return err
}

// report logs the first failure of a spell and the recovery after it, so a full disk does not log
// once per second.
func (s *sink) report(err error) {
	switch {
	case err != nil && !s.failing:
		s.failing = true
		slog.Error("access log lines dropped", "path", s.path, "error", err)
	case err == nil && s.failing:
		s.failing = false
		slog.Info("access log writing again", "path", s.path)
	}
}

func bytesLines(b []byte) int {
	n := bytes.Count(b, []byte{'\n'})
	if n == 0 {
		n = 1
	}
	return n
}
