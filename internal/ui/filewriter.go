package ui

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/trellis-mesh/trellis/internal/config"
	"github.com/trellis-mesh/trellis/internal/model"
)

// FileWriter writes weights back to the YAML file a VirtualService was
// read from, in the config directory the control plane watches; the
// watcher then applies the change like any other edit.
type FileWriter struct {
	dir string
	mu  sync.Mutex // one read-edit-validate-write at a time
}

// NewFileWriter returns a writer for resources loaded from dir.
func NewFileWriter(dir string) *FileWriter { return &FileWriter{dir: dir} }

// Editable implements WeightWriter: vs must come from a file under the
// directory.
func (w *FileWriter) Editable(vs *model.VirtualService) bool {
	if vs.Source.File == "" {
		return false
	}
	rel, err := filepath.Rel(w.dir, vs.Source.File)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}

// SetWeights implements WeightWriter. It edits the weights of
// spec.http[http] in the resource's own YAML document, leaving every other
// byte of the file as it was, checks the whole directory with the edited
// file, and only then replaces the file (atomically, keeping its mode).
func (w *FileWriter) SetWeights(_ context.Context, vs *model.VirtualService, http int, weights []int32) (*model.Config, error) {
	if !w.Editable(vs) {
		return nil, fmt.Errorf("%s: not a file of %s", vs.Key(), w.dir)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	path := vs.Source.File
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", vs.Key(), err)
	}
	edited, err := editWeights(data, vs.Kind, vs.Namespace, vs.Name, http, weights)
	if err != nil {
		return nil, &InvalidChange{Err: fmt.Errorf("%s: %s: %w", path, vs.Key(), err)}
	}
	cfg, _, err := config.LoadDirWithOverride(w.dir, path, edited)
	if err != nil {
		var ve *config.ValidationError
		if errors.As(err, &ve) {
			return nil, &InvalidChange{Err: err}
		}
		return nil, err
	}
	if err := writeFileAtomic(path, edited); err != nil {
		return nil, fmt.Errorf("%s: %w", vs.Key(), err)
	}
	return cfg, nil
}

// writeFileAtomic replaces path with data by renaming a temporary file of
// the same directory over it, so the watcher never reads half a file. The
// temporary file's name starts with a dot, which the loader skips.
func writeFileAtomic(path string, data []byte) error {
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return err
	}
	st, err := os.Stat(real)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(real), ".trellis-console-*.tmp")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after the rename, nothing to remove
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(st.Mode().Perm()); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), real)
}
