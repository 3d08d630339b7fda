// Package browser runs a real headless Chromium for tests of the console
// (internal/ui), driven over the DevTools protocol by chromedp. It is
// imported by tests only.
//
// Chromium is Debian's package (`make chromium` installs it when root). A
// test on a machine without it is skipped with a message saying what is
// missing, unless TRELLIS_REQUIRE_BROWSER=1 (as `make test` sets), which
// makes it a failure. Screenshots go under .cache/artifacts/ui/<test>/ in
// the repository (git-ignored); their paths are logged.
package browser

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// ExecPath is where Debian's chromium package puts the browser.
const ExecPath = "/usr/bin/chromium"

// RequireEnv names the variable that turns a missing browser from a skip
// into a failure.
const RequireEnv = "TRELLIS_REQUIRE_BROWSER"

// Browser is one headless Chromium with one tab, owned by one test; For
// hands it to a subtest.
type Browser struct {
	t testing.TB // where failures are reported
	*tab
}

type tab struct {
	ctx context.Context // the tab's chromedp context

	mu       sync.Mutex
	problems []string // console errors and uncaught exceptions, in order
}

// For returns the same browser reporting to t (a subtest): a subtest must
// not fail its parent.
func (b *Browser) For(t testing.TB) *Browser { return &Browser{t: t, tab: b.tab} }

// Find returns the Chromium to run ($TRELLIS_CHROMIUM, else Debian's),
// or an error saying what is missing.
func Find() (string, error) {
	if p := os.Getenv("TRELLIS_CHROMIUM"); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("TRELLIS_CHROMIUM: %w", err)
		}
		return p, nil
	}
	if _, err := os.Stat(ExecPath); err == nil {
		return ExecPath, nil
	}
	if p, err := exec.LookPath("chromium"); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("chromium not found at %s or on PATH: install Debian's chromium (`make chromium` as root, or apt-get install chromium)", ExecPath)
}

// New starts Chromium with a window of width x height CSS pixels and opens
// a blank tab. The browser stops when the test ends.
func New(t testing.TB, width, height int) *Browser {
	t.Helper()
	path, err := Find()
	if err != nil {
		if os.Getenv(RequireEnv) == "1" {
			t.Fatalf("%v (%s=1 makes this a failure)", err, RequireEnv)
		}
		t.Skipf("browser test skipped: %v; set %s=1 to fail instead", err, RequireEnv)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.WindowSize(width, height),
		// Software rendering: test machines have no GPU, and the numbers
		// logged stay comparable between machines.
		chromedp.DisableGPU,
	)
	if os.Geteuid() == 0 {
		// Chromium refuses to run as root with its sandbox.
		opts = append(opts, chromedp.NoSandbox)
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(allocCtx)
	b := &Browser{t: t, tab: &tab{ctx: ctx}}

	// The first action starts the browser; it must run on a context
	// without a deadline, or the deadline would end the browser.
	started := make(chan error, 1)
	go func() { started <- chromedp.Do(ctx) }()
	select {
	case err = <-started:
	case <-time.After(60 * time.Second):
		err = errors.New("chromium did not start within 60 s")
	}
	if err != nil {
		cancelTab()
		cancelAlloc()
		t.Fatalf("start %s: %v", path, err)
	}

	// Collect what the page reports as broken, for NoPageErrors.
	consoleDone := make(chan struct{})
	messages := chromedp.Console(ctx)
	go func() {
		defer close(consoleDone)
		for m, err := range messages {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleError || m.IsException() {
				b.mu.Lock()
				b.problems = append(b.problems, fmt.Sprintf("%s:%d: %s", m.URL, m.Line+1, m))
				b.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc()
		<-consoleDone
	})
	return b
}

// Ctx is the tab's context, for chromedp actions.
func (b *Browser) Ctx() context.Context { return b.ctx }

// Do runs the actions in the tab, failing the test if they do not finish
// within timeout.
func (b *Browser) Do(timeout time.Duration, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, timeout)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.Screenshot("failure")
		b.t.Fatalf("browser: %v", err)
	}
}

// Eval evaluates a JavaScript expression in the page and decodes its value.
func Eval[T any](b *Browser, expr string) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		b.t.Fatalf("browser: evaluate %s: %v", expr, err)
	}
	return v
}

// WaitFor polls the JavaScript expression every 50 ms until it is truthy
// and returns the time that took. On timeout it fails the test, saying
// what was awaited and what the page showed (describe is evaluated then).
func (b *Browser) WaitFor(timeout time.Duration, expr, what, describe string) time.Duration {
	b.t.Helper()
	start := time.Now()
	ctx, cancel := context.WithTimeout(b.ctx, timeout)
	defer cancel()
	var err error
	for {
		_, err = chromedp.Run(ctx, chromedp.Poll[chromedp.Void](expr,
			chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(time.Until(start.Add(timeout)))))
		// A poll started while the previous document was being replaced
		// loses its JavaScript context; start it again in the new one.
		if err == nil || ctx.Err() != nil || !contextLost(err) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		state := "?"
		if describe != "" {
			if v, derr := chromedp.Run(b.ctx, chromedp.Evaluate[string](describe)); derr == nil {
				state = v
			}
		}
		b.Screenshot("timeout")
		b.t.Fatalf("browser: %s: not within %v (%v); page: %s", what, timeout, err, state)
	}
	return time.Since(start)
}

func contextLost(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "Cannot find context with specified id") || strings.Contains(msg, "Execution context was destroyed")
}

// Screenshot saves the tab's viewport as <name>.png in the test's
// artifacts directory and logs the path. Failing to save is only logged:
// a screenshot is evidence, not the test.
func (b *Browser) Screenshot(name string) string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		b.t.Logf("screenshot %s: %v", name, err)
		return ""
	}
	path := filepath.Join(ArtifactsDir(b.t), name+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		b.t.Logf("screenshot %s: %v", name, err)
		return ""
	}
	b.t.Logf("screenshot: %s", path)
	return path
}

// PageErrors returns the console errors and uncaught exceptions seen so
// far.
func (b *Browser) PageErrors() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.problems...)
}

// NoPageErrors fails the test if the page logged an error or threw,
// except for messages containing one of expected (e.g. the browser's own
// "status of 422" line for a request the test meant to be rejected).
func (b *Browser) NoPageErrors(expected ...string) {
	b.t.Helper()
	var bad []string
	for _, p := range b.PageErrors() {
		if !slices.ContainsFunc(expected, func(e string) bool { return strings.Contains(p, e) }) {
			bad = append(bad, p)
		}
	}
	if len(bad) > 0 {
		b.t.Errorf("the page reported %d error(s):\n  %s", len(bad), strings.Join(bad, "\n  "))
	}
}

// ArtifactsDir is .cache/artifacts/ui/<test name> at the repository root
// (found from the working directory), created if needed.
func ArtifactsDir(t testing.TB) string {
	t.Helper()
	root, err := repoRoot()
	if err != nil {
		t.Fatalf("artifacts: %v", err)
	}
	dir := filepath.Join(root, ".cache", "artifacts", "ui", strings.NewReplacer("/", "_", " ", "_").Replace(t.Name()))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("artifacts: %v", err)
	}
	return dir
}

func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}
