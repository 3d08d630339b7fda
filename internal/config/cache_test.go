package config

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/model"
)

func writeCacheFile(t testing.TB, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func workloadEntryYAML(name, addr string) string {
	return fmt.Sprintf("apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: %s, namespace: default}\nspec:\n  address: %s\n  labels: {app: web}\n", name, addr)
}

const webEntryYAML = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: web, namespace: default}
spec:
  hosts: [web.default.svc.cluster.local]
  addresses: [240.0.0.1]
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  workloadSelector: {labels: {app: web}}
`

// TestDirLoaderReusesObjectsOfUnchangedFiles: after one file changes, the
// resources of the others are the very objects of the previous load, the
// changed file's are new, and a removed file's are gone.
func TestDirLoaderReusesObjectsOfUnchangedFiles(t *testing.T) {
	dir := t.TempDir()
	writeCacheFile(t, filepath.Join(dir, "services.yaml"), webEntryYAML)
	writeCacheFile(t, filepath.Join(dir, "a.yaml"), workloadEntryYAML("a", "10.0.0.1"))
	writeCacheFile(t, filepath.Join(dir, "sub/b.yaml"), workloadEntryYAML("b", "10.0.0.2"))
	// One file old enough to be trusted by its stamp, the others checked
	// by content.
	past := time.Now().Add(-time.Minute)
	if err := os.Chtimes(filepath.Join(dir, "services.yaml"), past, past); err != nil {
		t.Fatal(err)
	}
	l := NewDirLoader(dir)
	first, _, err := l.Load()
	if err != nil {
		t.Fatal(err)
	}
	writeCacheFile(t, filepath.Join(dir, "a.yaml"), workloadEntryYAML("a", "10.0.0.11"))
	second, _, err := l.Load()
	if err != nil {
		t.Fatal(err)
	}
	if second.ServiceEntries[0] != first.ServiceEntries[0] || second.WorkloadEntries[1] != first.WorkloadEntries[1] {
		t.Error("resources of unchanged files are new objects")
	}
	if second.WorkloadEntries[0] == first.WorkloadEntries[0] || second.WorkloadEntries[0].Spec.GetAddress() != "10.0.0.11" {
		t.Errorf("changed file: got %v, want the new address", second.WorkloadEntries[0].Spec)
	}
	if err := os.Remove(filepath.Join(dir, "sub/b.yaml")); err != nil {
		t.Fatal(err)
	}
	third, _, err := l.Load()
	if err != nil {
		t.Fatal(err)
	}
	if len(third.WorkloadEntries) != 1 || third.WorkloadEntries[0] != second.WorkloadEntries[0] {
		t.Errorf("after removing b.yaml: %d WorkloadEntries, want the one from a.yaml", len(third.WorkloadEntries))
	}
}

// TestDirLoaderSeesSameSizeRewriteWithUnchangedStamp: a file rewritten in
// place with the same size and modification time (a coarse-clock
// filesystem, or an edit within the same tick) is still read again.
func TestDirLoaderSeesSameSizeRewriteWithUnchangedStamp(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "a.yaml")
	writeCacheFile(t, path, workloadEntryYAML("a", "10.0.0.1"))
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	l := NewDirLoader(dir)
	if _, _, err := l.Load(); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(workloadEntryYAML("a", "10.0.0.9")); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, st.ModTime(), st.ModTime()); err != nil {
		t.Fatal(err)
	}
	if st2, err := os.Stat(path); err != nil || st2.Size() != st.Size() || !st2.ModTime().Equal(st.ModTime()) {
		t.Fatalf("setup: stamp changed (%v)", err)
	}
	cfg, _, err := l.Load()
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.WorkloadEntries[0].Spec.GetAddress(); got != "10.0.0.9" {
		t.Errorf("address %s, want the rewritten 10.0.0.9", got)
	}
}

// TestDirLoaderReportsErrorsAndWarningsOfCachedFilesAgain: a file served
// from the cache still contributes its errors and warnings, and cross-file
// checks see a conflict introduced by another file.
func TestDirLoaderReportsErrorsAndWarningsOfCachedFilesAgain(t *testing.T) {
	dir := t.TempDir()
	writeCacheFile(t, filepath.Join(dir, "bad.yaml"), "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: x, namespace: default}\nspec:\n  weight: -1\n  address: 10.0.0.1\n")
	l := NewDirLoader(dir)
	_, _, err1 := l.Load()
	_, _, err2 := l.Load()
	_, _, want := LoadDir(dir)
	if err1 == nil || err2 == nil || err1.Error() != want.Error() || err2.Error() != want.Error() {
		t.Fatalf("errors %v / %v, want %v both times", err1, err2, want)
	}
	writeCacheFile(t, filepath.Join(dir, "bad.yaml"), webEntryYAML)
	if _, _, err := l.Load(); err != nil {
		t.Fatalf("fixed: %v", err)
	}
	writeCacheFile(t, filepath.Join(dir, "dup.yaml"), strings.Replace(webEntryYAML, "name: web,", "name: web2,", 1))
	_, _, err := l.Load()
	_, _, want = LoadDir(dir)
	if err == nil || want == nil || err.Error() != want.Error() {
		t.Fatalf("duplicate host across files: %v, want %v", err, want)
	}
}

// TestDirLoaderMatchesLoadDir over the repository's config directories.
func TestDirLoaderMatchesLoadDir(t *testing.T) {
	dirs, _ := filepath.Glob("../translate/testdata/*")
	dirs = append(dirs, "testdata/valid", "testdata/invalid", "../../examples/demo")
	for _, dir := range dirs {
		if st, err := os.Stat(dir); err != nil || !st.IsDir() {
			continue
		}
		want, wantWarns, wantErr := LoadDir(dir)
		l := NewDirLoader(dir)
		for range 2 {
			got, warns, err := l.Load()
			if fmt.Sprint(err) != fmt.Sprint(wantErr) || fmt.Sprint(warns) != fmt.Sprint(wantWarns) {
				t.Fatalf("%s: errors/warnings differ:\n%v %v\nwant\n%v %v", dir, err, warns, wantErr, wantWarns)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("%s: configs differ", dir)
			}
		}
	}
}

// BenchmarkReloadOneFileChanged1000Services: one WorkloadEntry file of a
// 1000-service directory rewritten, then reload and snapshot: LoadDir and
// NewSnapshot (before), a warm DirLoader and NewSnapshotFrom (after).
func BenchmarkReloadOneFileChanged1000Services(b *testing.B) {
	dir := b.TempDir()
	writeMesh(b, dir, 1000, 20)
	// Out of the racy window, as files are in a directory that was not
	// just written.
	old := time.Now().Add(-time.Minute)
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if err := os.Chtimes(filepath.Join(dir, e.Name()), old, old); err != nil {
			b.Fatal(err)
		}
	}
	changed := filepath.Join(dir, "ep-svc-10.yaml")
	run := func(b *testing.B, load func() (*model.Config, []Warning, error), snapshot func(prev *model.Snapshot, cfg *model.Config) *model.Snapshot) {
		cfg, _, err := load()
		if err != nil {
			b.Fatal(err)
		}
		prev := model.NewSnapshot(cfg)
		var loading, snapshotting time.Duration
		for i := 0; b.Loop(); i++ {
			b.StopTimer()
			writeEndpointsFile(b, changed, 10, 20, fmt.Sprintf("10.99.%d.%d", i/250%250, i%250))
			b.StartTimer()
			start := time.Now()
			cfg, _, err := load()
			if err != nil {
				b.Fatal(err)
			}
			loaded := time.Now()
			prev = snapshot(prev, cfg)
			loading += loaded.Sub(start)
			snapshotting += time.Since(loaded)
		}
		b.ReportMetric(float64(loading.Microseconds())/float64(b.N)/1000, "load-ms/op")
		b.ReportMetric(float64(snapshotting.Microseconds())/float64(b.N)/1000, "snapshot-ms/op")
	}
	b.Run("LoadDir", func(b *testing.B) {
		run(b, func() (*model.Config, []Warning, error) { return LoadDir(dir) },
			func(_ *model.Snapshot, cfg *model.Config) *model.Snapshot { return model.NewSnapshot(cfg) })
	})
	l := NewDirLoader(dir)
	b.Run("DirLoader", func(b *testing.B) { run(b, l.Load, model.NewSnapshotFrom) })
}

// writeMesh writes cpbench's mesh (bench/cmd/cpbench/mesh.go).
func writeMesh(t testing.TB, dir string, services, namespaces int) {
	perNS := make([]strings.Builder, namespaces)
	for i := range services {
		ns, host := fmt.Sprintf("ns-%d", i%namespaces), fmt.Sprintf("svc-%d.ns-%d.svc.cluster.local", i, i%namespaces)
		b := &perNS[i%namespaces]
		fmt.Fprintf(b, "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: svc-%d, namespace: %s}\nspec:\n  hosts: [%s]\n  addresses: [%s]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{number: 8080, name: http, protocol: HTTP}]\n  workloadSelector: {labels: {app: svc-%d}}\n---\n",
			i, ns, host, meshIP(240, 1<<16+i), i)
		if i%10 == 0 {
			fmt.Fprintf(b, "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: svc-%[1]d, namespace: %[2]s}\nspec:\n  hosts: [%[3]s]\n  http:\n  - match: [{headers: {x-canary: {exact: \"1\"}}}]\n    route: [{destination: {host: %[3]s, subset: v2}}]\n  - route:\n    - {destination: {host: %[3]s, subset: v1}, weight: 90}\n    - {destination: {host: %[3]s, subset: v2}, weight: 10}\n    timeout: 5s\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: svc-%[1]d, namespace: %[2]s}\nspec:\n  host: %[3]s\n  trafficPolicy:\n    connectionPool: {http: {http1MaxPendingRequests: 100}}\n    outlierDetection: {consecutive5xxErrors: 5, interval: 10s}\n  subsets:\n  - {name: v1, labels: {version: v1}}\n  - {name: v2, labels: {version: v2}}\n---\n",
				i, ns, host)
		}
		writeEndpointsFile(t, filepath.Join(dir, fmt.Sprintf("ep-svc-%d.yaml", i)), i, namespaces, "")
	}
	for k := range perNS {
		writeCacheFile(t, filepath.Join(dir, fmt.Sprintf("services-ns-%d.yaml", k)), perNS[k].String())
	}
}

func meshIP(base, i int) string {
	return fmt.Sprintf("%d.%d.%d.%d", base, (i>>16)&255, (i>>8)&255, i&255)
}

// writeEndpointsFile writes service i's three WorkloadEntries; a non-empty
// moved replaces the first one's address.
func writeEndpointsFile(t testing.TB, path string, i, namespaces int, moved string) {
	var b strings.Builder
	for k := range 3 {
		addr := meshIP(10, 128<<16+i*3+k)
		if k == 0 && moved != "" {
			addr = moved
		}
		fmt.Fprintf(&b, "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: svc-%d-%d, namespace: ns-%d}\nspec:\n  address: %s\n  labels: {app: svc-%d, version: v%d}\n---\n",
			i, k, i%namespaces, addr, i, k%2+1)
	}
	writeCacheFile(t, path, b.String())
}

// TestWatchHandsBackUnchangedResourcesAsTheSameObjects: across a reload
// after one file was rewritten (by rename, as editors do), the watcher's
// configs share the resources of the files that did not change.
func TestWatchHandsBackUnchangedResourcesAsTheSameObjects(t *testing.T) {
	dir := t.TempDir()
	writeCacheFile(t, filepath.Join(dir, "services.yaml"), webEntryYAML)
	writeCacheFile(t, filepath.Join(dir, "a.yaml"), workloadEntryYAML("a", "10.0.0.1"))
	results := startWatch(t, dir)
	first := next(t, results, 10*time.Second)
	if first.err != nil {
		t.Fatal(first.err)
	}
	writeAtomic(t, filepath.Join(dir, "a.yaml"), workloadEntryYAML("a", "10.0.0.2"))
	deadline := time.Now().Add(10 * time.Second)
	for {
		r := next(t, results, 10*time.Second)
		if r.err != nil {
			t.Fatal(r.err)
		}
		if r.cfg.WorkloadEntries[0].Spec.GetAddress() != "10.0.0.2" {
			if time.Now().After(deadline) {
				t.Fatal("the rewritten address never arrived")
			}
			continue
		}
		if r.cfg.ServiceEntries[0] != first.cfg.ServiceEntries[0] {
			t.Error("the unchanged file's ServiceEntry is a new object")
		}
		return
	}
}
