package config

import (
	"crypto/sha256"
	"fmt"
	"os"
	"sync"
	"time"

	meshv1alpha1 "istio.io/api/mesh/v1alpha1"

	"github.com/trellis-mesh/trellis/internal/model"
)

// racyWindow covers the coarsest modification-time granularity we expect
// (FAT's 2 s): a file modified less than this before we read it could be
// rewritten, at the same size, without its stamp changing, so its content
// is compared too (git's "racily clean" entries).
const racyWindow = 2 * time.Second

// DirLoader is LoadDir with memory: it re-reads, re-parses and
// re-validates only the files that changed since its last Load, and hands
// back the same *model.X objects (and specs) for the resources of unchanged
// files, so that consumers can find unchanged resources by pointer
// (model.EndpointDelta). Checks across resources still run over the whole
// set on every Load. Safe for concurrent use; Loads run one at a time.
type DirLoader struct {
	dir string

	mu    sync.Mutex
	files map[string]*cachedFile
	objs  map[*document]any // the model object built for each cached document
}

// NewDirLoader returns a loader for dir; nothing is read until Load.
func NewDirLoader(dir string) *DirLoader {
	return &DirLoader{dir: dir, files: map[string]*cachedFile{}, objs: map[*document]any{}}
}

// Load is LoadDir(dir), served from the cache for unchanged files.
func (l *DirLoader) Load() (*model.Config, []Warning, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	files, err := configFiles(l.dir)
	if err != nil {
		return nil, nil, err
	}
	parsed := make([]*cachedFile, 0, len(files))
	seen := make(map[string]bool, len(files))
	for _, f := range files {
		cf, err := l.file(f)
		if err != nil {
			return nil, nil, err
		}
		parsed = append(parsed, cf)
		seen[f.path] = true
	}
	for path, cf := range l.files {
		if !seen[path] {
			l.forget(path, cf)
		}
	}
	return assemble(parsed, l.objs)
}

// cachedFile is one file's parse: its resources validated one by one, or
// its MeshConfig.
type cachedFile struct {
	path  string
	mesh  bool
	stamp fileStamp
	sum   [sha256.Size]byte
	read  time.Time // when the content behind stamp and sum was read

	docs     []*document
	warns    []Warning
	errs     []*ValidationError
	meshConf *meshv1alpha1.MeshConfig
}

// fileStamp is what stat says about a file; a change of any part means
// the file changed (the converse needs the racy check).
type fileStamp struct {
	size  int64
	mtime int64
	ino   uint64
	dev   uint64
}

// file returns f's parse, from the cache when its stamp is unchanged and
// old enough, or its content unchanged.
func (l *DirLoader) file(f configFile) (*cachedFile, error) {
	st, err := os.Stat(f.path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	stamp := stampOf(st)
	cf := l.files[f.path]
	if cf != nil && cf.mesh == f.mesh && cf.stamp == stamp && time.Unix(0, stamp.mtime).Before(cf.read.Add(-racyWindow)) {
		return cf, nil
	}
	now := time.Now()
	data, err := os.ReadFile(f.path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	sum := sha256.Sum256(data)
	if cf != nil && cf.mesh == f.mesh && cf.sum == sum {
		cf.stamp, cf.read = stamp, now
		return cf, nil
	}
	if cf != nil {
		l.forget(f.path, cf)
	}
	cf = parseConfigFile(f, data)
	cf.stamp, cf.sum, cf.read = stamp, sum, now
	l.files[f.path] = cf
	return cf, nil
}

func (l *DirLoader) forget(path string, cf *cachedFile) {
	for _, d := range cf.docs {
		delete(l.objs, d)
	}
	delete(l.files, path)
}

// parseConfigFile parses one file's bytes: a MeshConfig, or resources each
// validated on its own.
func parseConfigFile(f configFile, data []byte) *cachedFile {
	cf := &cachedFile{path: f.path, mesh: f.mesh}
	if f.mesh {
		cf.meshConf, cf.errs = parseMesh(f.path, data)
		return cf
	}
	p := parseFile(f.path, data)
	cf.docs, cf.warns, cf.errs = p.docs, p.warns, p.errs
	return cf
}
