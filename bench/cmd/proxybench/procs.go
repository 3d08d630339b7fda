package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// procs owns every process the benchmark starts. Each leads its own process group (nginx's
// workers and anything else it forks stay in it), so stopping a group stops all of it, and
// the group is also what procfs samples. stopAll runs on every exit path, Ctrl-C included.
type procs struct {
	logDir string
	// nice, when negative, raises every started process above the machine's other work (the
	// same for every peer and the rig): on a shared machine a compile's many threads would
	// otherwise take most of a pinned proxy's core. Needs root; 0 leaves priorities alone.
	nice int

	mu   sync.Mutex
	live map[*proc]struct{}
}

type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{} // closed when the leader has exited
	err  error         // the leader's exit, valid after done
}

func (p *proc) pgid() int { return p.cmd.Process.Pid }

func newProcs(logDir string, nice int) *procs {
	return &procs{logDir: logDir, nice: nice, live: make(map[*proc]struct{})}
}

// command builds argv, pinned to cpus with taskset when cpus is not empty, at ps.nice.
func (ps *procs) command(cpus string, env []string, argv []string) *exec.Cmd {
	if cpus != "" {
		argv = append([]string{"taskset", "-c", cpus}, argv...)
	}
	if ps.nice != 0 {
		argv = append([]string{"nice", "-n", strconv.Itoa(ps.nice)}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	// Own process group, and SIGKILL should this driver die without running its cleanup.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	return cmd
}

// start runs a long-lived process (a proxy or the backend), its output going to <logDir>/<name>.log.
func (ps *procs) start(name, cpus string, env []string, argv ...string) (*proc, error) {
	log, err := os.Create(filepath.Join(ps.logDir, name+".log"))
	if err != nil {
		return nil, err
	}
	cmd := ps.command(cpus, env, argv)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		log.Close()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	ps.mu.Lock()
	ps.live[p] = struct{}{}
	ps.mu.Unlock()
	go func() {
		p.err = cmd.Wait()
		log.Close()
		close(p.done)
	}()
	return p, nil
}

// exited reports the process's exit, with the tail of its log, if it has already exited.
func (ps *procs) exited(p *proc) error {
	select {
	case <-p.done:
		return fmt.Errorf("%s exited (%v): %s", p.name, p.err, ps.logTail(p.name))
	default:
		return nil
	}
}

func (ps *procs) logTail(name string) string {
	b, _ := os.ReadFile(filepath.Join(ps.logDir, name+".log"))
	s := strings.TrimSpace(string(b))
	if len(s) > 600 {
		s = "…" + s[len(s)-600:]
	}
	return s
}

// stop sends SIGTERM to p's group, waits up to 5s for the leader, then SIGKILLs whatever is
// left of the group (nginx workers that outlive their master, say).
func (ps *procs) stop(p *proc) {
	ps.mu.Lock()
	delete(ps.live, p)
	ps.mu.Unlock()
	_ = syscall.Kill(-p.pgid(), syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
	}
	_ = syscall.Kill(-p.pgid(), syscall.SIGKILL)
	<-p.done
}

func (ps *procs) stopAll() {
	ps.mu.Lock()
	all := make([]*proc, 0, len(ps.live))
	for p := range ps.live {
		all = append(all, p)
	}
	ps.mu.Unlock()
	for _, p := range all {
		ps.stop(p)
	}
}

// runOutput runs a short-lived command (wrk, the vegeta attack) to completion and returns its
// stdout; onLine sees each stdout line as it arrives. Cancelling ctx kills its whole group.
func (ps *procs) runOutput(ctx context.Context, name, cpus string, env, argv []string, onLine func(string)) (string, error) {
	cmd := ps.command(cpus, env, argv)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return "", err
	}
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("%s: %w", name, err)
	}
	stopKill := context.AfterFunc(ctx, func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) })
	defer stopKill()
	var all strings.Builder
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		line := sc.Text()
		all.WriteString(line)
		all.WriteByte('\n')
		if onLine != nil {
			onLine(line)
		}
	}
	_, _ = io.Copy(io.Discard, out)
	err = cmd.Wait()
	if ctx.Err() != nil {
		return all.String(), fmt.Errorf("%s: %w", name, ctx.Err())
	}
	if err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return all.String(), fmt.Errorf("%s: %v: %s", name, err, strings.TrimSpace(stderr.String()))
		}
		return all.String(), fmt.Errorf("%s: %w", name, err)
	}
	return all.String(), nil
}
