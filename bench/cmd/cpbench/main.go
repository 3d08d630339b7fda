// Command cpbench is the control-plane scale benchmark: it writes a
// synthetic mesh as a directory of Istio YAML, starts `trellis controlplane`
// on it as a separate process, connects xdsload's ADS clients, makes
// endpoint changes by rewriting WorkloadEntry files, and reports the control
// plane's memory and CPU (from /proc), convergence, propagation latency and
// bytes pushed, for state of the world and delta, at 1× and larger sizes.
// It writes its section of bench/RESULTS.md and raw JSON under bench/out/cp.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/trellis-mesh/trellis/bench/internal/procfs"
)

type config struct {
	trellis, xdsload string
	out              string
	results          string
	services         int
	clients          int
	namespaces       int
	scales           []int
	changes          int
	scaleChanges     int
	modes            []string
	pprof            bool
	note             string
	section          string
	convergeTimeout  time.Duration
	memLimit         string
	cpCPUs, loadCPUs string
}

func main() {
	var c config
	var scales, modes string
	flag.StringVar(&c.trellis, "trellis-bin", "bench/out/trellis", "trellis binary (built with -tags pprof for -pprof)")
	flag.StringVar(&c.xdsload, "xdsload-bin", "bench/out/xdsload", "xdsload binary")
	flag.StringVar(&c.out, "out", "bench/out/cp", "directory for the mesh, logs, profiles and raw JSON")
	flag.StringVar(&c.results, "results", "bench/RESULTS.md", "report to write the control-plane section into")
	flag.IntVar(&c.services, "services", 1000, "services at 1×")
	flag.IntVar(&c.clients, "clients", 2000, "ADS clients at 1×")
	flag.IntVar(&c.namespaces, "namespaces", 20, "namespaces the services and clients are spread over")
	flag.StringVar(&scales, "scales", "1,2,4", "sizes to run, as multiples of -services and -clients")
	flag.IntVar(&c.changes, "changes", 20, "endpoint changes at 1×")
	flag.IntVar(&c.scaleChanges, "scale-changes", 5, "endpoint changes at the larger sizes")
	flag.StringVar(&modes, "modes", "sotw,delta", "xDS variants to run")
	flag.BoolVar(&c.pprof, "pprof", false, "save a CPU profile of the control plane during convergence and a heap profile after (needs a -tags pprof build)")
	flag.StringVar(&c.note, "note", "", "a line for the report's header")
	flag.StringVar(&c.section, "section", "scale", "name of this run's section in the report (several runs keep one section each)")
	flag.DurationVar(&c.convergeTimeout, "converge-timeout", 5*time.Minute, "give up on a run whose clients have not all converged by then")
	flag.StringVar(&c.cpCPUs, "cp-cpus", "", "CPUs the control plane may run on (taskset -c list, e.g. 0); empty: any")
	flag.StringVar(&c.loadCPUs, "load-cpus", "", "CPUs the load process may run on (e.g. 1); empty: any")
	flag.StringVar(&c.memLimit, "memlimit", "", "GOMEMLIMIT for the control plane only (e.g. 250MiB), as a Deployment sets it from its memory limit; empty: none")
	flag.Parse()
	for _, s := range strings.Split(scales, ",") {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			log.Fatalf("-scales: %q", s)
		}
		c.scales = append(c.scales, n)
	}
	c.modes = strings.Split(modes, ",")
	if err := os.MkdirAll(c.out, 0o755); err != nil {
		log.Fatal(err)
	}
	var runs []*run
	for _, scale := range c.scales {
		for _, mode := range c.modes {
			changes := c.changes
			if scale > 1 {
				changes = c.scaleChanges
			}
			r := &run{Scale: scale, Mode: mode, Services: c.services * scale, Clients: c.clients * scale, ChangesMade: changes}
			log.Printf("run: %d services, %d %s clients", r.Services, r.Clients, mode)
			if err := r.do(&c); err != nil {
				log.Printf("run %dx %s: %v", scale, mode, err)
				r.Err = err.Error()
			}
			runs = append(runs, r)
			b, _ := json.MarshalIndent(r, "", "  ")
			_ = os.WriteFile(filepath.Join(c.out, fmt.Sprintf("run-%s-%dx-%s.json", c.section, scale, mode)), b, 0o644)
		}
	}
	if err := writeReport(&c, runs); err != nil {
		log.Fatal(err)
	}
}

// run is one size and xDS variant: its measurements.
type run struct {
	Scale    int    `json:"scale"`
	Mode     string `json:"mode"`
	Services int    `json:"services"`
	Clients  int    `json:"clients"`
	Err      string `json:"error,omitempty"`

	IdleRSSMiB     float64         `json:"idle_rss_mib"`       // config loaded, no client
	PeakRSSMiB     float64         `json:"peak_rss_mib"`       // VmHWM at the end
	SteadyRSSMiB   float64         `json:"steady_rss_mib"`     // all clients converged
	ConvergeMs     float64         `json:"converge_ms"`        // from the first dial to the last client with full config
	ConvergeCPUSec float64         `json:"converge_cpu_s"`     // control plane's CPU from first dial to convergence
	ChangeCPUSec   float64         `json:"change_cpu_s"`       // control plane's CPU per endpoint change
	LoadChangeCPU  float64         `json:"load_change_cpu_s"`  // the load process's CPU per endpoint change
	IdleCPUPct     float64         `json:"steady_cpu_percent"` // over 3 s with no change
	ChangesMade    int             `json:"changes_made"`
	Load           json.RawMessage `json:"load"` // xdsload's summary
	load           loadSummary
}

type loadSummary struct {
	Converged    int     `json:"converged"`
	Failed       int     `json:"failed"`
	ConvergeMs   float64 `json:"converge_ms"`
	ClientP50ms  float64 `json:"client_full_config_p50_ms"`
	ClientP99ms  float64 `json:"client_full_config_p99_ms"`
	BytesPerInit float64 `json:"bytes_per_client_full_config"`
	AllP50ms     float64 `json:"change_all_p50_ms"`
	AllP99ms     float64 `json:"change_all_p99_ms"`
	Changes      []struct {
		Received int     `json:"received"`
		Missed   int     `json:"missed"`
		MaxMs    float64 `json:"max_ms"`
	} `json:"changes"`
	Marks map[string]struct {
		Bytes     map[string]int64 `json:"bytes"`
		Responses map[string]int64 `json:"responses"`
		Resources map[string]int64 `json:"resources"`
	} `json:"marks"`
	Errors  []string `json:"errors"`
	Waiting []string `json:"waiting"`
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func (r *run) do(c *config) error {
	m := &mesh{dir: filepath.Join(c.out, fmt.Sprintf("mesh-%d", r.Services)), services: r.Services, namespaces: c.namespaces}
	if err := m.write(); err != nil {
		return fmt.Errorf("mesh: %w", err)
	}
	xdsPort, err := freePort()
	if err != nil {
		return err
	}
	pprofPort, _ := freePort()
	debugPort, _ := freePort()
	tag := fmt.Sprintf("%s-%dx-%s", c.section, r.Scale, r.Mode)
	cpLog, err := os.Create(filepath.Join(c.out, "controlplane-"+tag+".log"))
	if err != nil {
		return err
	}
	defer cpLog.Close()
	cp := pinned(c.cpCPUs, c.trellis, "controlplane", "--config-dir", m.dir,
		"--xds-address", fmt.Sprintf("127.0.0.1:%d", xdsPort),
		"--debug-address", fmt.Sprintf("127.0.0.1:%d", debugPort), "--ca-address", "", "--log-level", "warn")
	cp.Env = append(os.Environ(), fmt.Sprintf("TRELLIS_PPROF_ADDR=127.0.0.1:%d", pprofPort))
	if c.memLimit != "" {
		cp.Env = append(cp.Env, "GOMEMLIMIT="+c.memLimit)
	}
	cp.Stdout, cp.Stderr = cpLog, cpLog
	cp.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cp.Start(); err != nil {
		return err
	}
	defer func() {
		_ = syscall.Kill(-cp.Process.Pid, syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cp.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-cp.Process.Pid, syscall.SIGKILL)
			<-done
		}
	}()
	if err := waitLoaded(debugPort, r.Services, 60*time.Second); err != nil {
		return err
	}
	proc := procfs.Reader{Root: "/proc"}
	pg := cp.Process.Pid
	// sampleGroup reads a process group's CPU and memory; sample is the
	// control plane's.
	sampleGroup := func(pgid int) procfs.Sample {
		s, err := proc.Group(pgid)
		if err != nil {
			log.Printf("sample process group %d: %v", pgid, err)
		}
		return s
	}
	sample := func() procfs.Sample { return sampleGroup(pg) }
	time.Sleep(time.Second)
	s0 := sample()
	r.IdleRSSMiB = mib(s0.RSS)

	load := pinned(c.loadCPUs, c.xdsload, "-addr", fmt.Sprintf("127.0.0.1:%d", xdsPort), "-clients", strconv.Itoa(r.Clients),
		"-mode", r.Mode, "-namespaces", strconv.Itoa(c.namespaces))
	load.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdin, _ := load.StdinPipe()
	stdout, _ := load.StdoutPipe()
	stderr, _ := load.StderrPipe()
	if err := load.Start(); err != nil {
		return err
	}
	defer func() {
		_ = syscall.Kill(-load.Process.Pid, syscall.SIGKILL)
		_ = load.Wait()
	}()
	events := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			if strings.HasPrefix(line, "converged ") || strings.HasPrefix(line, "change-done ") {
				events <- line
			} else {
				log.Printf("xdsload: %s", line)
			}
		}
		close(events)
	}()
	var profWG sync.WaitGroup
	if c.pprof {
		profWG.Go(func() {
			saveProfile(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/profile?seconds=10", pprofPort), filepath.Join(c.out, "cpu-converge-"+tag+".pprof"))
		})
	}
	ev, err := waitEvent(events, "converged", c.convergeTimeout)
	if err != nil {
		// Say which clients did not get there, and why, from the load's summary.
		fmt.Fprintln(stdin, "quit")
		var sum loadSummary
		if out, rerr := io.ReadAll(stdout); rerr == nil && json.Unmarshal(out, &sum) == nil {
			return fmt.Errorf("%w: %d of %d clients converged, %d failed %v, waiting: %v", err, sum.Converged, r.Clients, sum.Failed, sum.Errors, sum.Waiting)
		}
		return err
	}
	s1 := sample()
	r.ConvergeMs, _ = strconv.ParseFloat(strings.TrimPrefix(ev, "converged "), 64)
	r.ConvergeCPUSec = (s1.CPU - s0.CPU).Seconds()
	profWG.Wait()
	time.Sleep(2 * time.Second)
	s2 := sample()
	time.Sleep(3 * time.Second)
	s3 := sample()
	r.SteadyRSSMiB = mib(s3.RSS)
	r.IdleCPUPct = 100 * (s3.CPU - s2.CPU).Seconds() / 3
	if c.pprof {
		saveProfile(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/heap?gc=1", pprofPort), filepath.Join(c.out, "heap-"+tag+".pprof"))
	}
	fmt.Fprintln(stdin, "mark before")
	if c.pprof {
		// The changes' CPU, for as long as they take (5 s at most).
		profWG.Go(func() {
			saveProfile(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/profile?seconds=5", pprofPort), filepath.Join(c.out, "cpu-changes-"+tag+".pprof"))
		})
		fmt.Fprintf(stdin, "profile %s\n", filepath.Join(c.out, "load-changes-"+tag+".pprof"))
	}
	sBefore, lBefore := sample(), sampleGroup(load.Process.Pid)
	for k := range r.ChangesMade {
		svc := (k*37 + 1) % r.Services
		if m.hasPolicy(svc) {
			svc++
		}
		moved := ip(10, 250<<16+k+1)
		at := time.Now()
		if err := m.writeEndpoints(svc, moved); err != nil {
			return err
		}
		fmt.Fprintf(stdin, "change c%d %s %s %d\n", k, m.cluster(svc), moved, at.UnixNano())
		if _, err := waitEvent(events, "change-done", 60*time.Second); err != nil {
			return err
		}
		time.Sleep(300 * time.Millisecond) // let ACKs and stragglers settle before the next
	}
	sAfter, lAfter := sample(), sampleGroup(load.Process.Pid)
	if c.pprof {
		fmt.Fprintln(stdin, "profile-stop")
	}
	profWG.Wait()
	r.ChangeCPUSec = (sAfter.CPU - sBefore.CPU).Seconds() / float64(max(1, r.ChangesMade))
	r.LoadChangeCPU = (lAfter.CPU - lBefore.CPU).Seconds() / float64(max(1, r.ChangesMade))
	fmt.Fprintln(stdin, "mark after")
	r.PeakRSSMiB = mib(sAfter.HWM)
	fmt.Fprintln(stdin, "quit")
	out, err := io.ReadAll(stdout)
	if err != nil {
		return err
	}
	r.Load = out
	if err := json.Unmarshal(out, &r.load); err != nil {
		return fmt.Errorf("xdsload summary: %w", err)
	}
	return nil
}

func mib(kib int64) float64 { return float64(kib) / 1024 }

// waitLoaded polls the control plane's /metrics until its config holds the
// mesh's services (trellis' config gauge), so clients meet a loaded mesh.
func waitLoaded(port, services int, within time.Duration) error {
	deadline := time.Now().Add(within)
	url := fmt.Sprintf("http://127.0.0.1:%d/debug/configz", port)
	for time.Now().Before(deadline) {
		resp, err := http.Get(url)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 && strings.Contains(string(b), fmt.Sprintf("svc-%d.", services-1)) {
				return nil
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("control plane did not load %d services within %s", services, within)
}

func waitEvent(events <-chan string, prefix string, within time.Duration) (string, error) {
	t := time.NewTimer(within)
	defer t.Stop()
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				return "", fmt.Errorf("xdsload exited while waiting for %s", prefix)
			}
			if strings.HasPrefix(ev, prefix) {
				return ev, nil
			}
		case <-t.C:
			return "", fmt.Errorf("no %s within %s", prefix, within)
		}
	}
}

func saveProfile(url, path string) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		log.Printf("pprof: %v (build trellis with -tags pprof)", err)
		return
	}
	defer resp.Body.Close()
	f, err := os.Create(path)
	if err != nil {
		return
	}
	defer f.Close()
	_, _ = io.Copy(f, resp.Body)
}

// pinned is exec.Command, run under taskset when cpus is set, so that the
// control plane and the load process can be measured on CPUs of their own.
func pinned(cpus, name string, args ...string) *exec.Cmd {
	if cpus == "" {
		return exec.Command(name, args...)
	}
	return exec.Command("taskset", append([]string{"-c", cpus, name}, args...)...)
}
