package intercept

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The network namespace test runs the real rules in two fresh namespaces joined by a veth pair:
//
//	app (10.0.0.2, the rules, capture listeners on 15001/15006) <-> peer (10.0.0.1, 10.0.1.1: real servers)
//
// The outer test (TestCaptureInNetworkNamespaces) builds them and re-runs this test binary inside
// the app namespace with `ip netns exec`, where TestCaptureInsideNamespace does the checks.
// The same binary also serves as the helper processes (servers, clients under another UID),
// selected by environment in TestMain.

const (
	envInside   = "TRELLIS_INTERCEPT_INSIDE" // name of the peer namespace
	envHelper   = "TRELLIS_INTERCEPT_HELPER" // serve | dial
	envHelperTo = "TRELLIS_INTERCEPT_ADDRS"
)

func TestMain(m *testing.M) {
	switch os.Getenv(envHelper) {
	case "serve":
		os.Exit(serveHelper(strings.Split(os.Getenv(envHelperTo), ",")))
	case "dial":
		os.Exit(dialHelper(os.Getenv(envHelperTo)))
	case "controlplane": // sidecars_netns_test.go
		os.Exit(controlPlaneHelper(os.Getenv(envHelperTo), os.Getenv(envCPDir)))
	case "http":
		os.Exit(httpHelper(strings.Split(os.Getenv(envHelperTo), ",")))
	case "get":
		os.Exit(getHelper(os.Getenv(envHelperTo)))
	}
	code := m.Run()
	if helperPath != "" {
		_ = os.RemoveAll(filepath.Dir(helperPath))
	}
	os.Exit(code)
}

// serveHelper answers every connection with "real <local address>" and closes it.
func serveHelper(addrs []string) int {
	for _, a := range addrs {
		ln, err := net.Listen("tcp4", a)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				fmt.Fprintf(c, "real %s\n", c.LocalAddr())
				c.Close()
			}
		}()
	}
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin) // until the test closes stdin or kills it
	return 0
}

// dialHelper connects to addr and prints what the server said.
func dialHelper(addr string) int {
	c, err := net.DialTimeout("tcp4", addr, 5*time.Second)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Print(line)
	return 0
}

func requireNetns(t *testing.T) {
	t.Helper()
	missing := ""
	if os.Geteuid() != 0 {
		missing = "not root"
	}
	for _, tool := range []string{"ip", "iptables-restore", "iptables-save"} {
		if _, err := exec.LookPath(tool); err != nil && missing == "" {
			missing = tool + " not installed (Debian: apt-get install iptables iproute2)"
		}
	}
	if missing == "" {
		return
	}
	if os.Getenv("TRELLIS_REQUIRE_NETNS") == "1" {
		t.Fatalf("network namespace test required (TRELLIS_REQUIRE_NETNS=1) but %s", missing)
	}
	t.Skipf("network namespace test skipped: %s (run as root with iptables and iproute2; TRELLIS_REQUIRE_NETNS=1 makes this a failure)", missing)
}

func sh(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func TestCaptureInNetworkNamespaces(t *testing.T) {
	requireNetns(t)
	app := fmt.Sprintf("trellis-ic-%d-app", os.Getpid())
	peer := fmt.Sprintf("trellis-ic-%d-peer", os.Getpid())
	for _, ns := range []string{app, peer} {
		sh(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
		sh(t, "ip", "-n", ns, "link", "set", "lo", "up")
	}
	vApp, vPeer := fmt.Sprintf("tic%da", os.Getpid()), fmt.Sprintf("tic%dp", os.Getpid())
	sh(t, "ip", "link", "add", vApp, "type", "veth", "peer", "name", vPeer)
	sh(t, "ip", "link", "set", vApp, "netns", app)
	sh(t, "ip", "link", "set", vPeer, "netns", peer)
	sh(t, "ip", "-n", app, "addr", "add", "10.0.0.2/24", "dev", vApp)
	sh(t, "ip", "-n", app, "link", "set", vApp, "up")
	sh(t, "ip", "-n", app, "route", "add", "10.0.1.0/24", "dev", vApp)
	sh(t, "ip", "-n", peer, "addr", "add", "10.0.0.1/24", "dev", vPeer)
	sh(t, "ip", "-n", peer, "addr", "add", "10.0.1.1/24", "dev", vPeer)
	sh(t, "ip", "-n", peer, "link", "set", vPeer, "up")

	// The peer's real servers: what a connection that bypassed capture reaches.
	server := exec.Command("ip", "netns", "exec", peer, os.Args[0])
	server.Env = append(os.Environ(), envHelper+"=serve", envHelperTo+"=0.0.0.0:80,0.0.0.0:81")
	stdin, _ := server.StdinPipe()
	stdout, _ := server.StdoutPipe()
	server.Stderr = os.Stderr
	if err := server.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); server.Process.Kill(); server.Wait() })
	if line, err := bufio.NewReader(stdout).ReadString('\n'); err != nil || line != "ready\n" {
		t.Fatalf("peer server: %q %v", line, err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	inner := exec.CommandContext(ctx, "ip", "netns", "exec", app, os.Args[0],
		"-test.run", "^TestCaptureInsideNamespace$", "-test.v", "-test.count=1")
	inner.Env = append(os.Environ(), envInside+"="+peer)
	out, err := inner.CombinedOutput()
	t.Logf("inside %s:\n%s", app, out)
	if err != nil {
		t.Fatalf("checks inside the namespace failed: %v", err)
	}
	if !strings.Contains(string(out), "--- PASS: TestCaptureInsideNamespace") {
		t.Fatal("the inner test did not run")
	}
}

// captureListener stands in for the proxy: it answers "captured <port> <original destination>".
func captureListener(t *testing.T, port int) {
	ln, err := net.Listen("tcp4", fmt.Sprintf("0.0.0.0:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { ln.Close(); <-done })
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			dst, err := OriginalDst(c)
			if err != nil {
				fmt.Fprintf(c, "captured %d error %v\n", port, err)
			} else {
				fmt.Fprintf(c, "captured %d %s\n", port, dst)
			}
			c.Close()
		}
	}()
}

// dial runs the dial helper (as uid/gid when non-zero, optionally in netns) and returns its line.
func dial(t *testing.T, netns string, uid uint32, addr string) string {
	t.Helper()
	if netns == "" && uid == 0 {
		// In this process: as fast as it gets, and the same rules apply as to a child.
		c, err := net.DialTimeout("tcp4", addr, 5*time.Second)
		if err != nil {
			t.Fatalf("dial %s: %v", addr, err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			t.Fatalf("read from %s: %v", addr, err)
		}
		return strings.TrimSpace(line)
	}
	bin, args := helperBinary(t), []string(nil)
	if netns != "" {
		bin, args = "ip", []string{"netns", "exec", netns, bin}
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), envHelper+"=dial", envHelperTo+"="+addr)
	if uid != 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
	}
	out, err := cmd.Output()
	if err != nil {
		stderr := ""
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("dial %s (uid %d): %v %s", addr, uid, err, stderr)
	}
	return strings.TrimSpace(string(out))
}

var helperPath string

// helperBinary is a copy of the test binary that UID 1337 may execute (go test's build directory
// is private to root).
func helperBinary(t *testing.T) string {
	if helperPath != "" {
		return helperPath
	}
	dir, err := os.MkdirTemp("", "trellis-intercept-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	bin, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	helperPath = filepath.Join(dir, "helper")
	if err := os.WriteFile(helperPath, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	return helperPath
}

func natTable(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("iptables-save", "-t", "nat").Output()
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range strings.Split(string(out), "\n") {
		if l != "" && !strings.HasPrefix(l, "#") {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, "\n")
}

func TestCaptureInsideNamespace(t *testing.T) {
	peer := os.Getenv(envInside)
	if peer == "" {
		t.Skip("runs inside the namespaces TestCaptureInNetworkNamespaces creates")
	}
	t.Cleanup(func() {
		if helperPath != "" {
			os.RemoveAll(filepath.Dir(helperPath))
		}
	})
	ctx := context.Background()
	captureListener(t, DefaultOutboundCapturePort)
	captureListener(t, DefaultInboundCapturePort)
	// An app port in this namespace: inbound connections to it must reach 15006 instead.
	captureListener(t, 8080)

	cfg := Config{ExcludeOutboundPorts: []uint16{81}, ExcludeOutboundCIDRs: []string{"10.0.1.0/24"}}
	if err := Apply(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	first := natTable(t)
	if err := Apply(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if again := natTable(t); again != first {
		t.Errorf("applying twice changed the nat table:\n%s\nvs\n%s", first, again)
	}
	if n := strings.Count(first, "-j ISTIO_OUTPUT"); n != 1 {
		t.Errorf("%d jumps to ISTIO_OUTPUT after two applies, want 1:\n%s", n, first)
	}

	t.Run("app outbound is captured with its original destination", func(t *testing.T) {
		if got, want := dial(t, "", 0, "10.0.0.1:80"), "captured 15001 10.0.0.1:80"; got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	})
	t.Run("the proxy's own outbound (uid 1337) is not captured", func(t *testing.T) {
		if got, want := dial(t, "", DefaultProxyUID, "10.0.0.1:80"), "real 10.0.0.1:80"; got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	})
	t.Run("excluded outbound port bypasses", func(t *testing.T) {
		if got, want := dial(t, "", 0, "10.0.0.1:81"), "real 10.0.0.1:81"; got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	})
	t.Run("excluded outbound CIDR bypasses", func(t *testing.T) {
		if got, want := dial(t, "", 0, "10.0.1.1:80"), "real 10.0.1.1:80"; got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	})
	t.Run("inbound to an app port is captured to 15006", func(t *testing.T) {
		if got, want := dial(t, peer, 0, "10.0.0.2:8080"), "captured 15006 10.0.0.2:8080"; got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	})
	t.Run("inbound to the proxy's status port is not captured", func(t *testing.T) {
		captureListener(t, 15020)
		if got, want := dial(t, peer, 0, "10.0.0.2:15020"), "captured 15020 10.0.0.2:15020"; got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	})

	if err := Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	if table := natTable(t); strings.Contains(table, "ISTIO_") {
		t.Errorf("cleanup left ISTIO_ rules:\n%s", table)
	}
	if got, want := dial(t, "", 0, "10.0.0.1:80"), "real 10.0.0.1:80"; got != want {
		t.Errorf("after cleanup: got %q, want %q", got, want)
	}

	t.Run("only the included outbound ports are captured, excluded CIDRs still bypass", func(t *testing.T) {
		if err := Apply(ctx, Config{IncludeOutboundCIDRs: None, IncludeOutboundPorts: []uint16{81},
			ExcludeOutboundCIDRs: []string{"10.0.1.0/24"}}); err != nil {
			t.Fatal(err)
		}
		defer Cleanup(ctx)
		for addr, want := range map[string]string{
			"10.0.0.1:81": "captured 15001 10.0.0.1:81", // included port
			"10.0.0.1:80": "real 10.0.0.1:80",           // not in -i, not in -q
			"10.0.1.1:81": "real 10.0.1.1:81",           // included port, excluded CIDR (Istio's order)
		} {
			if got := dial(t, "", 0, addr); got != want {
				t.Errorf("%s: got %q, want %q", addr, got, want)
			}
		}
	})

	t.Run("DNS is redirected to 15053 with --redirect-dns", func(t *testing.T) {
		// On 127.0.0.1, as Istio's DNS proxy: REDIRECT sends the query to 127.0.0.1, and only an
		// answer from there matches the conntrack entry that turns it back into 10.0.0.1:53.
		dns, err := net.ListenPacket("udp4", fmt.Sprintf("127.0.0.1:%d", DNSCapturePort))
		if err != nil {
			t.Fatal(err)
		}
		defer dns.Close()
		go func() {
			buf := make([]byte, 512)
			for {
				n, from, err := dns.ReadFrom(buf)
				if err != nil {
					return
				}
				dns.WriteTo(append([]byte("dns-proxy "), buf[:n]...), from)
			}
		}()
		if err := Apply(ctx, Config{DNS: true}); err != nil {
			t.Fatal(err)
		}
		defer Cleanup(ctx)
		c, err := net.Dial("udp4", "10.0.0.1:53")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte("query")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 512)
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("no answer from the DNS capture port: %v", err)
		}
		if got := string(buf[:n]); got != "dns-proxy query" {
			t.Errorf("got %q, want the capture listener's answer", got)
		}
	})
}
