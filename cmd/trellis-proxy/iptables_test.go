package main

import (
	"bytes"
	"strings"
	"testing"
)

func runIptables(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := newRootCommand()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(append([]string{"iptables"}, args...))
	err := cmd.Execute()
	return out.String(), err
}

func TestIptablesDryRunPrintsRulesForIstioFlags(t *testing.T) {
	out, err := runIptables(t, "--dry-run", "-p", "16001", "-z", "16006", "-u", "2000", "-g", "3000",
		"-b", "9080,8080", "-i", "10.0.0.0/8", "-x", "10.96.0.0/12", "-o", "3306", "-q", "6379", "--redirect-dns")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 16001\n",
		"-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 16006\n",
		"-A ISTIO_INBOUND -p tcp --dport 9080 -j ISTIO_IN_REDIRECT\n",
		"-A ISTIO_INBOUND -p tcp --dport 8080 -j ISTIO_IN_REDIRECT\n",
		"-A ISTIO_OUTPUT -m owner --uid-owner 2000 -j RETURN\n",
		"-A ISTIO_OUTPUT -m owner --gid-owner 3000 -j RETURN\n",
		"-A ISTIO_OUTPUT -d 10.96.0.0/12 -j RETURN\n",
		"-A ISTIO_OUTPUT -d 10.0.0.0/8 -j ISTIO_REDIRECT\n",
		"-A ISTIO_OUTPUT -p tcp --dport 3306 -j RETURN\n",
		"-A ISTIO_OUTPUT -p udp --dport 53 -j REDIRECT --to-ports 15053\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in\n%s", want, out)
		}
	}
	if strings.Contains(out, "-A ISTIO_OUTPUT -j ISTIO_REDIRECT") {
		t.Errorf("captures every destination although -i lists ranges:\n%s", out)
	}
	// -q captures its port to destinations -i does not list, but not to those -x excludes.
	exclude := strings.Index(out, "-A ISTIO_OUTPUT -d 10.96.0.0/12 -j RETURN\n")
	include := strings.Index(out, "-A ISTIO_OUTPUT -p tcp --dport 6379 -j ISTIO_REDIRECT\n")
	ranges := strings.Index(out, "-A ISTIO_OUTPUT -d 10.0.0.0/8 -j ISTIO_REDIRECT\n")
	if include < 0 || exclude > include || include > ranges {
		t.Errorf("-q 6379 should redirect after the -x RETURN and before the -i ranges:\n%s", out)
	}
}

func TestIptablesEmptyInboundPortsCapturesNoInbound(t *testing.T) {
	out, err := runIptables(t, "-n", "-b", "")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out, "PREROUTING") {
		t.Errorf("-b '' still jumps from PREROUTING:\n%s", out)
	}
}

func TestIptablesRejectsBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"-n", "-x", "10.0.0.0/40"},
		{"-n", "-d", "ssh"},
		{"-n", "-b", "99999"},
		{"-n", "-q", "redis"},
	} {
		if _, err := runIptables(t, args...); err == nil {
			t.Errorf("trellis-proxy iptables %v accepted", args)
		}
	}
}
