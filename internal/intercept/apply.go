package intercept

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
)

// Apply installs the rules for c in the current network namespace's nat table. It is idempotent:
// the table is read with iptables-save, every ISTIO_* chain and every jump to one is dropped, the
// new rules are added, and the whole nat table is written back in one iptables-restore (atomic).
func Apply(ctx context.Context, c Config) error {
	rules, err := Build(c)
	if err != nil {
		return err
	}
	return replace(ctx, &rules)
}

// Cleanup removes every ISTIO_* chain and every jump to one from the nat table, leaving the
// other rules as they were.
func Cleanup(ctx context.Context) error { return replace(ctx, nil) }

// DryRun returns the iptables-restore input Apply would add for c, touching nothing.
func DryRun(c Config) (string, error) {
	rules, err := Build(c)
	if err != nil {
		return "", err
	}
	return rules.RestoreText(), nil
}

func replace(ctx context.Context, rules *Rules) error {
	current, err := run(ctx, nil, "iptables-save", "-t", "nat")
	if err != nil {
		return err
	}
	_, err = run(ctx, strings.NewReader(Merge(current, rules)), "iptables-restore", "-w", "5")
	return err
}

// Merge rewrites an `iptables-save -t nat` dump: every ISTIO_* chain and every rule in it or
// jumping to it is dropped, then rules (nil: none) are added to the nat table. The result is a
// full nat table for iptables-restore (without --noflush), so applying it twice gives the same table.
func Merge(saved string, rules *Rules) string {
	var b strings.Builder
	inNat, sawNat := false, false
	emit := func() {
		if rules == nil {
			return
		}
		for _, c := range rules.Chains {
			b.WriteString(":" + c + " - [0:0]\n")
		}
		for _, r := range rules.Rules {
			b.WriteString(r.String() + "\n")
		}
	}
	for _, line := range strings.Split(saved, "\n") {
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
			continue
		case strings.HasPrefix(line, "*"):
			inNat = line == "*nat"
			sawNat = sawNat || inNat
		case !inNat:
			continue
		case line == "COMMIT":
			emit()
		case strings.HasPrefix(line, ":ISTIO_"), isIstioRule(line):
			continue
		case strings.HasPrefix(line, ":"):
			// Counters of the built-in chains are not ours to keep or reset.
			if i := strings.LastIndex(line, " ["); i > 0 {
				line = line[:i] + " [0:0]"
			}
		}
		if inNat {
			b.WriteString(line + "\n")
		}
	}
	if !sawNat {
		// An empty dump (no nat rules yet): declare the built-in chains ourselves.
		b.WriteString("*nat\n")
		for _, c := range []string{"PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"} {
			b.WriteString(":" + c + " ACCEPT [0:0]\n")
		}
		emit()
		b.WriteString("COMMIT\n")
	}
	return b.String()
}

func isIstioRule(line string) bool {
	f := strings.Fields(line)
	if len(f) >= 2 && f[0] == "-A" && strings.HasPrefix(f[1], "ISTIO_") {
		return true
	}
	for i := 0; i+1 < len(f); i++ {
		if (f[i] == "-j" || f[i] == "-g") && strings.HasPrefix(f[i+1], "ISTIO_") {
			return true
		}
	}
	return false
}

func run(ctx context.Context, stdin *strings.Reader, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	if stdin != nil {
		cmd.Stdin = stdin
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s: %w: %s", name, err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}
