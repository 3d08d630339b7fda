package procfs

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// A real line from /proc/<pid>/stat, with a command name that holds spaces and a ')'.
const statLine = "16280 (my) proc x) R 16278 16270 13224 0 -1 4194304 98 0 0 0 150 25 0 0 20 0 1 0 396633 3133440 359 18446744073709551615 0 0 0\n"

func TestParseStatCountsFieldsFromTheLastParenthesis(t *testing.T) {
	s, err := ParseStat([]byte(statLine))
	if err != nil {
		t.Fatal(err)
	}
	want := Stat{PID: 16280, PPID: 16278, PGRP: 16270, UTime: 150, STime: 25}
	if s != want {
		t.Fatalf("got %+v, want %+v", s, want)
	}
	if s.CPU() != 1750*time.Millisecond {
		t.Fatalf("CPU() = %v, want 1.75s", s.CPU())
	}
}

func TestParseStatRejectsTruncatedLines(t *testing.T) {
	for _, in := range []string{"", "12 (x", "12 (x) R 1 2 3", "x (y) R 1 2 3 4 5 6 7 8 9 10 11 12 13"} {
		if _, err := ParseStat([]byte(in)); err == nil {
			t.Errorf("ParseStat(%q) accepted", in)
		}
	}
}

func TestParseStatusReadsRSSAndPeakInKiB(t *testing.T) {
	in := "Name:\tnginx\nVmPeak:\t  20000 kB\nVmHWM:\t    4096 kB\nVmRSS:\t    2048 kB\nThreads:\t1\n"
	m, err := ParseStatus([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if m != (Memory{RSS: 2048, HWM: 4096}) {
		t.Fatalf("got %+v", m)
	}
	if m, err := ParseStatus([]byte("Name:\tkthreadd\nState:\tS\n")); err != nil || m != (Memory{}) {
		t.Fatalf("kernel thread: got %+v, %v", m, err)
	}
	if _, err := ParseStatus([]byte("VmRSS:\t12 MB\n")); err == nil {
		t.Fatal("accepted a unit other than kB")
	}
}

func TestGroupSumsOnlyTheProcessesOfOneGroup(t *testing.T) {
	root := t.TempDir()
	proc := func(pid, pgrp string, utime, stime string, rss, hwm string) {
		dir := filepath.Join(root, pid)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		stat := pid + " (nginx) S 1 " + pgrp + " 0 0 -1 0 0 0 0 0 " + utime + " " + stime + " 0 0 20 0 1 0\n"
		status := "Name:\tnginx\nVmHWM:\t" + hwm + " kB\nVmRSS:\t" + rss + " kB\n"
		if err := os.WriteFile(filepath.Join(dir, "stat"), []byte(stat), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "status"), []byte(status), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	proc("100", "100", "10", "5", "1000", "1500")    // master
	proc("101", "100", "200", "100", "3000", "4000") // worker
	proc("200", "200", "999", "999", "9999", "9999") // another group
	if err := os.MkdirAll(filepath.Join(root, "self"), 0o755); err != nil {
		t.Fatal(err)
	}

	s, err := Reader{Root: root}.Group(100)
	if err != nil {
		t.Fatal(err)
	}
	want := Sample{Procs: 2, CPU: 3150 * time.Millisecond, RSS: 4000, HWM: 5500}
	if s != want {
		t.Fatalf("got %+v, want %+v", s, want)
	}
	if _, err := (Reader{Root: root}).Group(300); err == nil {
		t.Fatal("an empty group read without error")
	}
}

func TestGroupReadsThisProcessFromRealProc(t *testing.T) {
	s, err := Reader{Root: "/proc"}.Group(syscall.Getpgrp())
	if err != nil {
		t.Fatal(err)
	}
	if s.Procs < 1 || s.RSS <= 0 || s.HWM < s.RSS/2 {
		t.Fatalf("implausible sample of our own group: %+v", s)
	}
}

func TestParseSockstatTimeWait(t *testing.T) {
	in := "sockets: used 27\nTCP: inuse 10 orphan 0 tw 25156 alloc 10 mem 241\nUDP: inuse 0 mem 0\n"
	if n, err := ParseSockstatTimeWait([]byte(in)); err != nil || n != 25156 {
		t.Fatalf("got %d, %v", n, err)
	}
	for _, bad := range []string{"", "TCP: inuse 10 orphan 0\n", "TCP: tw x\n"} {
		if _, err := ParseSockstatTimeWait([]byte(bad)); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
	if b, err := os.ReadFile("/proc/net/sockstat"); err == nil {
		if _, err := ParseSockstatTimeWait(b); err != nil {
			t.Errorf("this machine's sockstat: %v", err)
		}
	}
}
