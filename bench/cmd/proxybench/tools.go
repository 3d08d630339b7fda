package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strings"
	"time"
)

// ensureTools finds nginx, haproxy and wrk, installing the missing ones from Debian's archive
// when running as root (apt-get update, then install --no-install-recommends).
func ensureTools(ctx context.Context) (tools, error) {
	want := []struct{ bin, pkg string }{{"nginx", "nginx-light"}, {"haproxy", "haproxy"}, {"wrk", "wrk"}}
	var missing, pkgs []string
	for _, w := range want {
		if _, err := lookTool(w.bin); err != nil {
			missing, pkgs = append(missing, w.bin), append(pkgs, w.pkg)
		}
	}
	if _, err := exec.LookPath("taskset"); err != nil {
		missing, pkgs = append(missing, "taskset"), append(pkgs, "util-linux")
	}
	if len(missing) > 0 {
		if os.Geteuid() != 0 {
			return tools{}, fmt.Errorf("missing %s; install them (Debian: sudo apt-get install -y --no-install-recommends %s) or run as root",
				strings.Join(missing, ", "), strings.Join(pkgs, " "))
		}
		fmt.Fprintf(os.Stderr, "proxybench: installing %s\n", strings.Join(pkgs, " "))
		if err := apt(ctx, "update"); err != nil {
			return tools{}, err
		}
		if err := apt(ctx, append([]string{"install", "-y", "--no-install-recommends"}, pkgs...)...); err != nil {
			// nginx-light is gone from newer Debian releases, where "nginx" is the small one.
			alt := strings.Join(pkgs, " ")
			if !strings.Contains(alt, "nginx-light") {
				return tools{}, err
			}
			pkgs = strings.Fields(strings.Replace(alt, "nginx-light", "nginx", 1))
			if err := apt(ctx, append([]string{"install", "-y", "--no-install-recommends"}, pkgs...)...); err != nil {
				return tools{}, err
			}
		}
	}
	var t tools
	var err error
	if t.nginx, err = lookTool("nginx"); err != nil {
		return t, err
	}
	if t.haproxy, err = lookTool("haproxy"); err != nil {
		return t, err
	}
	if t.wrk, err = lookTool("wrk"); err != nil {
		return t, err
	}
	return t, nil
}

// lookTool searches PATH and then /usr/sbin, where Debian puts nginx and haproxy but a
// non-root PATH often does not look.
func lookTool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/sbin"} {
		p := dir + "/" + name
		if st, err := os.Stat(p); err == nil && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found", name)
}

func apt(ctx context.Context, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "apt-get", args...)
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("apt-get %s: %w", strings.Join(args, " "), err)
	}
	return nil
}

// machine is what the report says about where and with what it ran.
type machine struct {
	Date        string `json:"date"`
	CPUModel    string `json:"cpu_model"`
	CPUs        []int  `json:"cpus"`
	Kernel      string `json:"kernel"`
	MemTotal    string `json:"mem_total"`
	LoadAvg     string `json:"loadavg_start"`
	LoadAvgEnd  string `json:"loadavg_end"`
	Go          string `json:"go"`
	Nginx       string `json:"nginx"`
	HAProxy     string `json:"haproxy"`
	Wrk         string `json:"wrk"`
	Vegeta      string `json:"vegeta"`
	TrellisRev  string `json:"trellis_revision"`
	TrellisPath string `json:"trellis_binary"`
	Wall        string `json:"wall"`
	Nice        int    `json:"nice"`
}

func collectFacts(ctx context.Context, t tools, cpus []int) machine {
	m := machine{
		Date:        time.Now().UTC().Format(time.RFC3339),
		CPUs:        cpus,
		Kernel:      strings.TrimSpace(readFile("/proc/sys/kernel/osrelease")),
		LoadAvg:     loadAvg(),
		Go:          firstLine(output(ctx, "go", "version")),
		Nginx:       firstLine(output(ctx, t.nginx, "-v")),
		HAProxy:     firstLine(output(ctx, t.haproxy, "-v")),
		Wrk:         firstLine(output(ctx, t.wrk, "-v")),
		Vegeta:      moduleVersion("github.com/tsenart/vegeta/v12"),
		TrellisPath: t.trellis,
	}
	if m.Go == "" {
		m.Go = runtime.Version()
	}
	for line := range strings.Lines(readFile("/proc/cpuinfo")) {
		if v, ok := strings.CutPrefix(line, "model name"); ok {
			m.CPUModel = strings.TrimSpace(strings.TrimLeft(v, " \t:"))
			break
		}
	}
	for line := range strings.Lines(readFile("/proc/meminfo")) {
		if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			m.MemTotal = strings.TrimSpace(v)
			break
		}
	}
	// The revision of the proxy under test: changes under bench/ (this report) do not count.
	rev := strings.TrimSpace(output(ctx, "git", "rev-parse", "--short=12", "HEAD"))
	if rev != "" && strings.TrimSpace(output(ctx, "git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench")) != "" {
		rev += " (with uncommitted changes)"
	}
	m.TrellisRev = rev
	return m
}

func loadAvg() string {
	f := strings.Fields(readFile("/proc/loadavg"))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

func readFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

// output is a command's stdout and stderr (nginx -v and wrk -v print on stderr and wrk exits 1).
func output(ctx context.Context, name string, args ...string) string {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	b, _ := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return string(b)
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(line)
}

func moduleVersion(path string) string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == path {
				return d.Path + " " + d.Version
			}
		}
	}
	return path + " (version unknown)"
}
