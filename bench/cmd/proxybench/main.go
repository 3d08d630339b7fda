// Command proxybench compares trellis-proxy with nginx and haproxy on loopback, every peer in
// front of the same 1 KB backend and pinned to the same cores, and writes bench/RESULTS.md plus
// raw JSON under bench/out/. It installs what it lacks (Debian: nginx-light, haproxy, wrk),
// builds trellis-proxy from the tree, starts and stops every process itself (Ctrl-C included),
// and bounds every step in time. Run from the repository root:
//
//	go run ./bench/cmd/proxybench            # full run, about 6 minutes
//	BENCH_QUICK=1 go run ./bench/cmd/proxybench   # about 2 minutes, shorter steps
//
// Scenarios: maximum rps (wrk, keep-alive) at 1 and 2 cores; p50/p90/p99 at fixed 1000 and
// 5000 rps (vegeta, open loop) direct, through 1 proxy and through a chain of 2; RSS idle and
// under load with 100 clusters, and CPU seconds per 1000 requests. Every figure is also given
// as a ratio to nginx measured in the same run.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/trellis-mesh/trellis/bench/internal/procfs"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "attack" {
		if err := attackMain(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "proxybench attack:", err)
			os.Exit(1)
		}
		return
	}
	if err := benchMain(); err != nil {
		fmt.Fprintln(os.Stderr, "proxybench:", err)
		os.Exit(1)
	}
}

func benchMain() error {
	var (
		quick    = flag.Bool("quick", os.Getenv("BENCH_QUICK") == "1", "short steps, about 2 minutes (also BENCH_QUICK=1)")
		outDir   = flag.String("out", "bench/out", "raw results, logs and generated configs")
		results  = flag.String("results", "bench/RESULTS.md", "the report to write")
		proxyBin = flag.String("proxy-bin", "", "trellis-proxy binary to measure (default: built from ./cmd/trellis-proxy)")
		only     = flag.String("only", "maxrps,latency,footprint", "scenarios to run, comma-separated")
		note     = flag.String("note", "", "a line for the report's header (what this run measures, e.g. the commit under test)")
		nice     = flag.Int("nice", defaultNice(), "niceness of every process started (-10 as root: above other work on a shared machine; 0: unchanged)")
		limit    = flag.Duration("timeout", 0, "stop everything after this long (default 8m quick, 20m full)")
	)
	flag.Parse()
	start := time.Now()
	p := newPlan(*quick)
	if *limit == 0 {
		*limit = 20 * time.Minute
		if *quick {
			*limit = 8 * time.Minute
		}
	}
	scenarios := strings.Split(*only, ",")
	for _, s := range scenarios {
		if !slices.Contains([]string{scenarioMaxRPS, scenarioLatency, scenarioFootprint}, s) {
			return fmt.Errorf("-only: unknown scenario %q", s)
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *limit)
	defer cancel()

	// Every process started here inherits the highest open-files limit we may set: haproxy sizes
	// maxconn from it and an open-loop client facing a saturated proxy opens many connections.
	var nofile syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &nofile); err == nil && nofile.Cur < nofile.Max {
		nofile.Cur = nofile.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &nofile)
	}

	t, err := ensureTools(ctx)
	if err != nil {
		return err
	}
	runDir := filepath.Join(*outDir, "run")
	if err := os.RemoveAll(runDir); err != nil {
		return err
	}
	if err := os.MkdirAll(runDir, 0o755); err != nil {
		return err
	}
	absRun, err := filepath.Abs(runDir)
	if err != nil {
		return err
	}
	if *proxyBin == "" {
		bin := filepath.Join(absRun, "trellis-proxy")
		fmt.Fprintln(os.Stderr, "proxybench: go build -o", bin, "./cmd/trellis-proxy")
		build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/trellis-proxy")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			return fmt.Errorf("building trellis-proxy: %w", err)
		}
		*proxyBin = bin
	}
	if t.trellis, err = filepath.Abs(*proxyBin); err != nil {
		return err
	}
	cpus, err := allowedCPUs()
	if err != nil {
		return err
	}
	m := collectFacts(ctx, t, cpus)
	fmt.Fprintf(os.Stderr, "proxybench: %s, %d CPUs %v, quick=%v\n", m.CPUModel, len(cpus), cpus, p.Quick)

	ps := newProcs(absRun, *nice)
	defer ps.stopAll()
	b := &bench{ps: ps, tools: t, plan: p, cpus: cpus, dir: absRun, proc: procfs.Reader{Root: "/proc"}}
	var stepErr error
	for _, s := range scenarios {
		switch s {
		case scenarioMaxRPS:
			for _, cores := range p.CoreCounts {
				if cores > len(cpus) {
					continue
				}
				if stepErr = b.maxRPS(ctx, cores); stepErr != nil {
					break
				}
			}
		case scenarioLatency:
			stepErr = b.latency(ctx)
		case scenarioFootprint:
			stepErr = b.footprint(ctx)
		}
		if stepErr != nil {
			break
		}
	}
	ps.stopAll()
	m.LoadAvgEnd = loadAvg()
	m.Wall = time.Since(start).Round(time.Second).String()

	m.Nice = *nice
	rep := report{Machine: m, Plan: p, Runs: b.runs, Note: *note, Command: commandLine(*quick)}
	if stepErr != nil {
		rep.Aborted = stepErr.Error()
	}
	raw, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	stamp := time.Now().UTC().Format("20060102T150405Z")
	for _, name := range []string{"results-" + stamp + ".json", "results.json"} {
		if err := os.WriteFile(filepath.Join(*outDir, name), raw, 0o644); err != nil {
			return err
		}
	}
	if err := os.WriteFile(*results, []byte(rep.markdown()), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "proxybench: wrote %s and %s in %s\n", *results, filepath.Join(*outDir, "results.json"), m.Wall)
	if stepErr != nil {
		return fmt.Errorf("stopped early (report written with what was measured): %w", stepErr)
	}
	return nil
}

func defaultNice() int {
	if os.Geteuid() == 0 {
		return -10
	}
	return 0
}

func commandLine(quick bool) string {
	if quick {
		return "BENCH_QUICK=1 make bench-proxy"
	}
	return "make bench-proxy"
}

// allowedCPUs is this process's CPU affinity (Cpus_allowed_list), so pinning respects a cgroup.
func allowedCPUs() ([]int, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return nil, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Cpus_allowed_list:"); ok {
			return parseCPUList(strings.TrimSpace(v))
		}
	}
	return nil, fmt.Errorf("/proc/self/status: no Cpus_allowed_list")
}

// parseCPUList reads the kernel's list format: "0-3,8,10-11".
func parseCPUList(s string) ([]int, error) {
	var cpus []int
	for _, part := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		if err != nil {
			return nil, fmt.Errorf("cpu list %q: %w", s, err)
		}
		z := a
		if isRange {
			if z, err = strconv.Atoi(hi); err != nil || z < a {
				return nil, fmt.Errorf("cpu list %q: bad range %q", s, part)
			}
		}
		for c := a; c <= z; c++ {
			cpus = append(cpus, c)
		}
	}
	return cpus, nil
}
