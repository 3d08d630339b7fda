// Package procfs reads the CPU time and memory of a process group from Linux's /proc, for the
// peer benchmark: every process the benchmark starts leads its own process group, so one group
// is one proxy (nginx's master and workers, haproxy, trellis-proxy) however many processes it forks.
package procfs

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// ClockTick is USER_HZ, the unit of utime and stime in /proc/<pid>/stat. Linux fixes it at 100 for
// user space on every architecture we run on (sysconf(_SC_CLK_TCK)), whatever the kernel's HZ.
const ClockTick = 100

// Stat is the part of /proc/<pid>/stat the benchmark needs.
type Stat struct {
	PID, PPID, PGRP int
	// UTime and STime are the CPU time spent in user and kernel mode by all threads, in ticks.
	UTime, STime uint64
}

// CPU is the process's total CPU time.
func (s Stat) CPU() time.Duration {
	return time.Duration(s.UTime+s.STime) * time.Second / ClockTick
}

// ParseStat parses the contents of /proc/<pid>/stat. The command name (field 2) is in parentheses
// and may itself hold spaces and parentheses, so fields are counted from the last ')'.
func ParseStat(b []byte) (Stat, error) {
	open := bytes.IndexByte(b, '(')
	end := bytes.LastIndexByte(b, ')')
	if open < 0 || end < open {
		return Stat{}, errors.New("stat: no (comm)")
	}
	pid, err := strconv.Atoi(string(bytes.TrimSpace(b[:open])))
	if err != nil {
		return Stat{}, fmt.Errorf("stat: pid: %w", err)
	}
	// After ")": field 3 (state) is rest[0], so field n is rest[n-3].
	rest := bytes.Fields(b[end+1:])
	if len(rest) < 13 {
		return Stat{}, fmt.Errorf("stat: %d fields after comm, want at least 13", len(rest))
	}
	s := Stat{PID: pid}
	ints := []struct {
		field int
		dst   *int
	}{{4, &s.PPID}, {5, &s.PGRP}}
	for _, f := range ints {
		if *f.dst, err = strconv.Atoi(string(rest[f.field-3])); err != nil {
			return Stat{}, fmt.Errorf("stat: field %d: %w", f.field, err)
		}
	}
	if s.UTime, err = strconv.ParseUint(string(rest[14-3]), 10, 64); err != nil {
		return Stat{}, fmt.Errorf("stat: utime: %w", err)
	}
	if s.STime, err = strconv.ParseUint(string(rest[15-3]), 10, 64); err != nil {
		return Stat{}, fmt.Errorf("stat: stime: %w", err)
	}
	return s, nil
}

// Memory is the part of /proc/<pid>/status the benchmark needs, in KiB.
type Memory struct {
	RSS int64 // VmRSS: resident now
	HWM int64 // VmHWM: peak resident since the process started
}

// ParseStatus parses the contents of /proc/<pid>/status. Kernel threads and zombies have no Vm
// lines; they read as zero.
func ParseStatus(b []byte) (Memory, error) {
	var m Memory
	for line := range bytes.Lines(b) {
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		var dst *int64
		switch string(name) {
		case "VmRSS":
			dst = &m.RSS
		case "VmHWM":
			dst = &m.HWM
		default:
			continue
		}
		f := bytes.Fields(value)
		if len(f) != 2 || string(f[1]) != "kB" {
			return Memory{}, fmt.Errorf("status: %s: %q, want \"<n> kB\"", name, bytes.TrimSpace(value))
		}
		n, err := strconv.ParseInt(string(f[0]), 10, 64)
		if err != nil {
			return Memory{}, fmt.Errorf("status: %s: %w", name, err)
		}
		*dst = n
	}
	return m, nil
}

// Sample is one reading of a whole process group.
type Sample struct {
	Procs int
	CPU   time.Duration // utime+stime summed over the group's processes
	RSS   int64         // KiB, VmRSS summed (shared pages count once per process)
	HWM   int64         // KiB, VmHWM summed
}

// Reader reads a process group from a /proc tree (Root is "/proc" outside tests).
type Reader struct{ Root string }

// Group sums the live processes whose process group is pgid. A process that exits between
// listing and reading is skipped: its CPU time is then lost to the sample, which is why the
// benchmark only samples processes it keeps running for the whole measurement.
func (r Reader) Group(pgid int) (Sample, error) {
	entries, err := os.ReadDir(r.Root)
	if err != nil {
		return Sample{}, err
	}
	var s Sample
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		dir := filepath.Join(r.Root, e.Name())
		b, err := os.ReadFile(filepath.Join(dir, "stat"))
		if err != nil {
			continue // gone
		}
		st, err := ParseStat(b)
		if err != nil {
			return Sample{}, fmt.Errorf("%s: %w", dir, err)
		}
		if st.PGRP != pgid {
			continue
		}
		b, err = os.ReadFile(filepath.Join(dir, "status"))
		if err != nil {
			continue
		}
		mem, err := ParseStatus(b)
		if err != nil {
			return Sample{}, fmt.Errorf("%s: %w", dir, err)
		}
		s.Procs++
		s.CPU += st.CPU()
		s.RSS += mem.RSS
		s.HWM += mem.HWM
	}
	if s.Procs == 0 {
		return Sample{}, fmt.Errorf("process group %d: no live process", pgid)
	}
	return s, nil
}

// ParseSockstatTimeWait reads the number of IPv4 TCP sockets in TIME_WAIT from the contents of
// /proc/net/sockstat ("TCP: inuse 10 orphan 0 tw 25156 alloc 10 mem 241").
func ParseSockstatTimeWait(b []byte) (int, error) {
	for line := range bytes.Lines(b) {
		rest, ok := bytes.CutPrefix(line, []byte("TCP:"))
		if !ok {
			continue
		}
		f := bytes.Fields(rest)
		for i := 0; i+1 < len(f); i += 2 {
			if string(f[i]) == "tw" {
				return strconv.Atoi(string(f[i+1]))
			}
		}
		return 0, fmt.Errorf("sockstat: no tw in %q", bytes.TrimSpace(line))
	}
	return 0, errors.New("sockstat: no TCP line")
}
