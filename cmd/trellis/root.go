package main

import (
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/spf13/cobra"
)

// newRootCmd builds the command tree. Each subcommand lives in its own file
// and is added here.
func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "trellis",
		Short: "Trellis: a service mesh that reads Istio config and serves Envoy xDS",
		Long: "Trellis is a service mesh: a control plane that reads Istio YAML and serves\n" +
			"Envoy xDS v3, and trellis-proxy, the data plane that consumes it.",
		// Errors are printed once by main; usage is for flag mistakes only.
		SilenceErrors: true,
		SilenceUsage:  true,
	}
	root.AddCommand(
		newControlPlaneCmd(),
		newUpCmd(),
		newProxyStatusCmd(),
		newProxyConfigCmd(),
		newDashboardCmd(),
		newTokenCmd(),
		newInstallCmd(),
		newInjectCmd(),
		newAnalyzeCmd(),
	)
	return root
}

// logFlags is the --log-level flag shared by long-running commands.
type logFlags struct{ level string }

func (f *logFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.level, "log-level", "info", "log level: debug, info, warn or error")
}

// logger returns a text logger writing to w at the requested level.
func (f *logFlags) logger(w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(strings.TrimSpace(f.level))); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", f.level)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level})), nil
}
