package demo

import (
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Config holds the demo's Istio YAML under "config/": mesh.yaml,
// services.yaml, workloads.yaml, sidecars.yaml, gateway.yaml,
// destination-rules.yaml and reviews.yaml.
//
//go:embed config/*.yaml
var Config embed.FS

// WriteConfig writes the demo's YAML files into dir (created if missing)
// for a user to edit. It never overwrites: if any of the files already
// exists it writes nothing and returns an error matching fs.ErrExist, so
// a caller reusing a directory keeps the user's edits.
func WriteConfig(dir string) error {
	files, err := fs.Glob(Config, "config/*.yaml")
	if err != nil {
		return fmt.Errorf("demo config: %w", err)
	}
	for _, f := range files {
		dst := filepath.Join(dir, filepath.Base(f))
		if _, err := os.Lstat(dst); err == nil {
			return fmt.Errorf("demo config: %s: %w; remove it or use another directory", dst, fs.ErrExist)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("demo config: %w", err)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("demo config: %w", err)
	}
	for _, f := range files {
		data, err := Config.ReadFile(f)
		if err != nil {
			return fmt.Errorf("demo config: %w", err)
		}
		dst := filepath.Join(dir, filepath.Base(f))
		if err := writeNew(dst, data); err != nil {
			return fmt.Errorf("demo config: %w", err)
		}
	}
	return nil
}

// writeNew creates path exclusively, so a file appearing since the check
// above is not clobbered either.
func writeNew(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
