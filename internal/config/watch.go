package config

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/trellis-mesh/trellis/internal/model"
)

// debounce is how long the directory must be quiet before a reload, so that
// an editor's write-rename-chmod sequence, or a `cp -r` of many files, is
// read once and whole.
const debounce = 100 * time.Millisecond

// Watch loads dir, calls onConfig with the config (or onError with why it
// is invalid), then reloads the whole directory whenever anything under it
// changes, about 100 ms after the last change. A valid config goes to
// onConfig and its warnings to slog; an invalid one only to onError, so the
// caller keeps serving its last good config.
//
// Callbacks run one at a time on Watch's goroutine; one that blocks delays
// the next reload. Watch returns nil when ctx is done, or an error if the
// directory cannot be watched.
func Watch(ctx context.Context, dir string, onConfig func(*model.Config), onError func(error)) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch config dir %s: %w", dir, err)
	}
	defer w.Close()
	if err := w.Add(dir); err != nil {
		return fmt.Errorf("watch config dir %s: %w", dir, err)
	}
	syncWatches(w, dir)

	loader := NewDirLoader(dir) // re-parses only the files that changed
	reload := func() {
		cfg, warns, err := loader.Load()
		for _, wn := range warns {
			slog.Warn("config: "+wn.Message, "source", wn.Source.String())
		}
		if err != nil {
			onError(err)
			return
		}
		onConfig(cfg)
	}
	reload()

	timer := time.NewTimer(debounce)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return errors.New("watch config dir: watcher closed")
			}
			// A new directory is watched at once, so that files written
			// into it before the reload are not missed afterwards.
			if ev.Has(fsnotify.Create) && !isHidden(dir, ev.Name) {
				if st, err := os.Stat(ev.Name); err == nil && st.IsDir() {
					syncWatches(w, ev.Name)
				}
			}
			timer.Reset(debounce)
		case err, ok := <-w.Errors:
			if !ok {
				return errors.New("watch config dir: watcher closed")
			}
			// Typically an event queue overflow: changes were lost, so
			// reload to be sure.
			slog.Warn("config: watch error; reloading", "dir", dir, "err", err)
			timer.Reset(debounce)
		case <-timer.C:
			syncWatches(w, dir)
			reload()
		}
	}
}

// syncWatches adds a watch for every directory under root that LoadDir
// reads and has none yet. Watches on removed directories go away by
// themselves.
func syncWatches(w *fsnotify.Watcher, root string) {
	watched := map[string]bool{}
	for _, p := range w.WatchList() {
		watched[p] = true
	}
	_ = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // gone or unreadable: LoadDir reports it
		}
		if !d.IsDir() {
			return nil
		}
		if path != root && strings.HasPrefix(d.Name(), ".") {
			return filepath.SkipDir
		}
		if !watched[path] {
			if err := w.Add(path); err != nil {
				slog.Warn("config: cannot watch directory", "dir", path, "err", err)
			}
		}
		return nil
	})
}

// isHidden reports whether path, under dir, has a component LoadDir skips.
func isHidden(dir, path string) bool {
	rel, err := filepath.Rel(dir, path)
	if err != nil {
		return false
	}
	for _, part := range strings.Split(rel, string(filepath.Separator)) {
		if strings.HasPrefix(part, ".") && part != "." {
			return true
		}
	}
	return false
}
