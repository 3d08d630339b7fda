package config

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/model"
)

// watchResult is one callback from Watch: a config or an error.
type watchResult struct {
	cfg *model.Config
	err error
}

// startWatch runs Watch on dir until the test ends, and checks it returns.
func startWatch(t *testing.T, dir string) <-chan watchResult {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	results := make(chan watchResult, 16)
	done := make(chan error, 1)
	go func() {
		done <- Watch(ctx, dir,
			func(cfg *model.Config) { results <- watchResult{cfg: cfg} },
			func(err error) { results <- watchResult{err: err} })
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Watch returned %v", err)
			}
		case <-time.After(2 * time.Second):
			t.Error("Watch did not return after its context was cancelled")
		}
	})
	return results
}

func next(t *testing.T, results <-chan watchResult, within time.Duration) watchResult {
	t.Helper()
	select {
	case r := <-results:
		return r
	case <-time.After(within):
		t.Fatalf("no callback within %v", within)
		return watchResult{}
	}
}

// quiet asserts no further callback arrives: an invalid config must give
// one onError and nothing else.
func quiet(t *testing.T, results <-chan watchResult) {
	t.Helper()
	select {
	case r := <-results:
		t.Fatalf("unexpected callback: cfg %v err %v", r.cfg, r.err)
	case <-time.After(300 * time.Millisecond):
	}
}

func workloadEntry(name, address string) string {
	return fmt.Sprintf("apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: %s}\nspec: {address: %q}\n", name, address)
}

// writeAtomic writes the way many editors do: a temp file renamed over the
// original.
func writeAtomic(t *testing.T, path, content string) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".swp")
	writeFile(t, tmp, content)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func TestWatchDeliversValidConfigsAndOnlyErrorsForInvalidOnes(t *testing.T) {
	dir := t.TempDir()
	results := startWatch(t, dir)
	if r := next(t, results, time.Second); r.err != nil || len(r.cfg.WorkloadEntries) != 0 {
		t.Fatalf("initial: got cfg %v err %v, want an empty config", r.cfg, r.err)
	}

	path := filepath.Join(dir, "we.yaml")
	writeFile(t, path, workloadEntry("a", "127.0.1.2"))
	r := next(t, results, time.Second)
	if r.err != nil || len(r.cfg.WorkloadEntries) != 1 || r.cfg.WorkloadEntries[0].Spec.GetAddress() != "127.0.1.2" {
		t.Fatalf("valid: got cfg %v err %v", r.cfg, r.err)
	}

	writeFile(t, path, workloadEntry("a", "not an address"))
	r = next(t, results, time.Second)
	if r.cfg != nil || r.err == nil {
		t.Fatalf("invalid: got cfg %v err %v, want only an error", r.cfg, r.err)
	}
	want := path + `:4: WorkloadEntry default/a: spec.address: "not an address" is not an IP address or host name`
	if r.err.Error() != want {
		t.Errorf("invalid: error\n got %s\nwant %s", r.err, want)
	}
	quiet(t, results)

	writeAtomic(t, path, workloadEntry("a", "127.0.1.3"))
	r = next(t, results, time.Second)
	if r.err != nil || len(r.cfg.WorkloadEntries) != 1 || r.cfg.WorkloadEntries[0].Spec.GetAddress() != "127.0.1.3" {
		t.Fatalf("valid again: got cfg %v err %v", r.cfg, r.err)
	}
}

func TestWatchFollowsNewAndRemovedSubdirectories(t *testing.T) {
	dir := t.TempDir()
	results := startWatch(t, dir)
	next(t, results, time.Second)

	sub := filepath.Join(dir, "team", "workloads")
	writeFile(t, filepath.Join(sub, "a.yaml"), workloadEntry("a", "127.0.1.2"))
	r := next(t, results, time.Second)
	if r.err != nil || len(r.cfg.WorkloadEntries) != 1 {
		t.Fatalf("new dir: got cfg %v err %v", r.cfg, r.err)
	}

	// A later write inside the new directory is seen: it is watched too.
	writeFile(t, filepath.Join(sub, "b.yaml"), workloadEntry("b", "127.0.1.3"))
	r = next(t, results, time.Second)
	if r.err != nil || len(r.cfg.WorkloadEntries) != 2 {
		t.Fatalf("file in new dir: got cfg %v err %v", r.cfg, r.err)
	}

	if err := os.RemoveAll(filepath.Join(dir, "team")); err != nil {
		t.Fatal(err)
	}
	r = next(t, results, time.Second)
	for r.err == nil && len(r.cfg.WorkloadEntries) != 0 {
		// Removal may be seen in two steps (files, then dirs).
		r = next(t, results, time.Second)
	}
	if r.err != nil {
		t.Fatalf("removed dir: got err %v", r.err)
	}
}

func TestWatchReportsInitialErrorThenRecovers(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "we.yaml")
	writeFile(t, path, "kind: [")
	results := startWatch(t, dir)
	if r := next(t, results, time.Second); r.err == nil {
		t.Fatalf("initial: got cfg %v, want an error", r.cfg)
	}
	writeFile(t, path, workloadEntry("a", "127.0.1.2"))
	if r := next(t, results, time.Second); r.err != nil || len(r.cfg.WorkloadEntries) != 1 {
		t.Fatalf("fixed: got cfg %v err %v", r.cfg, r.err)
	}
}

func TestWatchMissingDirIsAnError(t *testing.T) {
	err := Watch(context.Background(), filepath.Join(t.TempDir(), "nope"), func(*model.Config) {}, func(error) {})
	if err == nil {
		t.Fatal("got no error")
	}
}
