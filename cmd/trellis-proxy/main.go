// Command trellis-proxy is Trellis's data plane: a sidecar or gateway proxy that takes its
// configuration from any Envoy xDS v3 control plane (or a static Envoy bootstrap) and proxies HTTP.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/trellis-mesh/trellis/internal/proxy"
)

func main() {
	if err := newRootCommand().Execute(); err != nil {
		os.Exit(1)
	}
}

func newRootCommand() *cobra.Command {
	var (
		opts     proxy.Options
		metadata []string
		logLevel string
	)
	cmd := &cobra.Command{
		Use:           "trellis-proxy",
		Short:         "Trellis data plane proxy (Envoy xDS v3)",
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var level slog.Level
			if err := level.UnmarshalText([]byte(logLevel)); err != nil {
				return fail(fmt.Errorf("--log-level %q: %w", logLevel, err))
			}
			opts.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
			md, err := parseMetadata(metadata)
			if err != nil {
				return fail(err)
			}
			opts.Metadata = md
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			return fail(proxy.Run(ctx, opts))
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.XDSAddress, "xds-address", "", "control plane ADS address host:port (default: the bootstrap's ads_config cluster)")
	f.StringVar(&opts.NodeID, "node-id", "", "xDS node ID, e.g. sidecar~127.0.1.3~reviews-v1.default~default.svc.cluster.local")
	f.StringVar(&opts.Cluster, "cluster", "", "xDS node cluster (default: <workload>.<namespace> from the node ID)")
	f.StringArrayVar(&metadata, "metadata", nil, "node metadata KEY=VALUE (repeatable), e.g. INTERCEPTION_MODE=NONE")
	f.StringVar(&opts.BootstrapPath, "config", "", "Envoy bootstrap file (YAML or JSON): static_resources, node, admin, dynamic_resources")
	f.StringVar(&opts.AdminAddress, "admin-address", proxy.DefaultAdminAddress, "admin API address (the bootstrap's admin.address wins when set)")
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn, error")
	f.DurationVar(&opts.DrainDuration, "drain-duration", proxy.DefaultDrainDuration, "how long in-flight requests may take to finish on shutdown")
	return cmd
}

func parseMetadata(kvs []string) (map[string]string, error) {
	md := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--metadata %q: want KEY=VALUE", kv)
		}
		md[k] = v
	}
	return md, nil
}

// fail prints err the way users read it and passes it on for the exit status.
func fail(err error) error {
	if err != nil {
		fmt.Fprintf(os.Stderr, "trellis-proxy: %v\n", err)
	}
	return err
}
