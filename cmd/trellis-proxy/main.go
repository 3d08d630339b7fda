// Command trellis-proxy is Trellis's data plane: a sidecar or gateway proxy that takes its
// configuration from any Envoy xDS v3 control plane (or a static Envoy bootstrap) and proxies HTTP.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/trellis-mesh/trellis/internal/proxy"
	"github.com/trellis-mesh/trellis/internal/proxy/identity"
)

func main() {
	if err := newRootCommand().Execute(); err != nil {
		os.Exit(1)
	}
}

func newRootCommand() *cobra.Command {
	var (
		opts           proxy.Options
		metadata       []string
		labels         []string
		logLevel       string
		componentLevel string
		caAddress      string
		caRootCert     string
		tokenFile      string
		exitOnZero     bool
	)
	cmd := &cobra.Command{
		Use:           "trellis-proxy",
		Short:         "Trellis data plane proxy (Envoy xDS v3)",
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			levels, err := logLevels(logLevel, componentLevel)
			if err != nil {
				return fail(err)
			}
			opts.LogLevels = levels
			md, err := parseMetadata(metadata)
			if err != nil {
				return fail(err)
			}
			lbl, err := parseKeyValues("--label", labels)
			if err != nil {
				return fail(err)
			}
			environ := os.Environ()
			envLabels, err := labelsFromEnv(environ)
			if err != nil {
				return fail(err)
			}
			opts.Metadata = overlay(metadataFromEnv(environ), md)
			opts.Labels = overlay(envLabels, lbl)
			if opts.ProxyConfig, err = proxyConfigFromEnv(environ); err != nil {
				return fail(err)
			}
			if opts.Identity, err = identityConfig(caAddress, caRootCert, tokenFile); err != nil {
				return fail(err)
			}
			if err := lifecycleFromEnv(cmd, &opts, &exitOnZero); err != nil {
				return fail(err)
			}
			opts.DrainFullDuration = !exitOnZero
			ctx, stop := onSignals()
			defer stop()
			return fail(proxy.Run(ctx, opts))
		},
	}
	f := cmd.Flags()
	f.StringVar(&caAddress, "ca-address", "", "Istio CA (IstioCertificateService over TLS) host:port, e.g. 127.0.0.1:15012; runs the identity agent serving SDS secrets default and ROOTCA (default: off)")
	f.StringVar(&caRootCert, "ca-root-cert", "", "PEM file of the root the CA's TLS certificate must chain to (required with --ca-address)")
	f.StringVar(&tokenFile, "token-file", "", "file holding the bearer token for the CA, re-read on every request (a service-account or `trellis token create` token)")
	f.StringVar(&opts.XDSAddress, "xds-address", "", "control plane ADS address host:port (default: the bootstrap's ads_config cluster)")
	f.StringVar(&opts.NodeID, "node-id", "", "xDS node ID, e.g. sidecar~127.0.1.3~reviews-v1.default~default.svc.cluster.local")
	f.StringVar(&opts.Cluster, "cluster", "", "xDS node cluster (default: <workload>.<namespace> from the node ID)")
	f.StringArrayVar(&metadata, "metadata", nil, "node metadata KEY=VALUE (repeatable), e.g. INTERCEPTION_MODE=NONE; wins over the environment's "+
		"(as Istio's agent: ISTIO_META_<KEY>, POD_NAME, POD_NAMESPACE, INSTANCE_IP, SERVICE_ACCOUNT; PROXY_CONFIG, whose readinessProbe is run and reported)")
	f.StringArrayVar(&labels, "label", nil, "workload label KEY=VALUE (repeatable) for node.metadata.LABELS, e.g. app=reviews, version=v1; wins over $ISTIO_METAJSON_LABELS")
	f.StringVar(&opts.StatusAddress, "status-address", "", "Istio status port address serving /stats/prometheus and /healthz/ready, e.g. 0.0.0.0:15020 (default: off)")
	f.StringVar(&opts.HealthAddress, "health-address", "", "Istio health port address serving /healthz/ready, e.g. 0.0.0.0:15021 (default: off)")
	f.StringVar(&opts.DNSAddress, "dns-address", "", "DNS proxy address (UDP and TCP), e.g. 127.0.0.1:15053: answers mesh names from the xDS config and forwards the rest (default: off)")
	f.StringSliceVar(&opts.DNSUpstreams, "dns-upstream", nil, "upstream resolvers host:port for the DNS proxy, comma-separated or repeated (default: the nameservers of /etc/resolv.conf)")
	f.StringVar(&opts.BootstrapPath, "config", "", "Envoy bootstrap file (YAML or JSON): static_resources, node, admin, dynamic_resources")
	f.StringVar(&opts.AdminAddress, "admin-address", proxy.DefaultAdminAddress, "admin API address (the bootstrap's admin.address wins when set)")
	f.StringVar(&logLevel, "log-level", "info", "log level of every component: trace, debug, info, warning, error, critical, off")
	f.StringVar(&componentLevel, "component-log-level", "", "per-component levels, as Envoy's flag: upstream:debug,http:info (components: "+
		strings.Join(proxy.LogComponents, ", ")+")")
	f.DurationVar(&opts.DrainDuration, "drain-duration", proxy.DefaultDrainDuration,
		"Envoy's --drain-time-s: how long the connections of a listener removed or replaced by LDS may finish, and the period of /drain_listeners?graceful")
	f.DurationVar(&opts.TerminationDrainDuration, "termination-drain-duration", proxy.DefaultTerminationDrainDuration,
		"on SIGTERM or POST :15020/quitquitquit, how long requests in flight may finish before the proxy exits (Istio's terminationDrainDuration; env TERMINATION_DRAIN_DURATION)")
	f.BoolVar(&exitOnZero, "exit-on-zero-active-connections", true,
		"end the termination drain as soon as no downstream connection is open (Istio's EXIT_ON_ZERO_ACTIVE_CONNECTIONS, off there by default; env of that name)")
	f.DurationVar(&opts.MinimumDrainDuration, "minimum-drain-duration", 0,
		"with --exit-on-zero-active-connections, drain at least this long (Istio's MINIMUM_DRAIN_DURATION; env of that name)")
	cmd.AddCommand(newIptablesCommand(), newWaitCommand())
	return cmd
}

// lifecycleFromEnv reads Istio's agent environment variables for the termination drain
// (TERMINATION_DRAIN_DURATION, or TERMINATION_DRAIN_DURATION_SECONDS, EXIT_ON_ZERO_ACTIVE_CONNECTIONS,
// MINIMUM_DRAIN_DURATION), which injection sets from ProxyConfig; a flag given on the command line
// wins over its variable. Durations are Go durations ("15s") or whole seconds ("15").
func lifecycleFromEnv(cmd *cobra.Command, opts *proxy.Options, exitOnZero *bool) error {
	f := cmd.Flags()
	for _, v := range []struct {
		flag string
		envs []string
		dst  *time.Duration
	}{
		{"termination-drain-duration", []string{"TERMINATION_DRAIN_DURATION", "TERMINATION_DRAIN_DURATION_SECONDS"}, &opts.TerminationDrainDuration},
		{"minimum-drain-duration", []string{"MINIMUM_DRAIN_DURATION"}, &opts.MinimumDrainDuration},
	} {
		if f.Changed(v.flag) {
			continue
		}
		for _, env := range v.envs {
			s, ok := os.LookupEnv(env)
			if !ok || s == "" {
				continue
			}
			d, err := parseSecondsOrDuration(s)
			if err != nil {
				return fmt.Errorf("$%s: %w", env, err)
			}
			*v.dst = d
			break
		}
	}
	if s := os.Getenv("EXIT_ON_ZERO_ACTIVE_CONNECTIONS"); s != "" && !f.Changed("exit-on-zero-active-connections") {
		b, err := strconv.ParseBool(s)
		if err != nil {
			return fmt.Errorf("$EXIT_ON_ZERO_ACTIVE_CONNECTIONS: %w", err)
		}
		*exitOnZero = b
	}
	return nil
}

func parseSecondsOrDuration(s string) (time.Duration, error) {
	if n, err := strconv.Atoi(s); err == nil && n >= 0 {
		return time.Duration(n) * time.Second, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%q: want a duration (15s) or whole seconds (15)", s)
	}
	return d, nil
}

// logLevels builds the per-component levels over one stderr handler from --log-level and
// --component-log-level.
func logLevels(all, components string) (*proxy.LogLevels, error) {
	level, err := proxy.ParseLevel(all)
	if err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	// The handler takes every level; the components' levels decide, and /logging changes them.
	base := slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug - 4})
	levels := proxy.NewLogLevels(base, level)
	if err := levels.SetComponents(components); err != nil {
		return nil, fmt.Errorf("--component-log-level: %w", err)
	}
	return levels, nil
}

// onSignals returns a context cancelled by the first SIGTERM or SIGINT, which starts the graceful
// drain; a second one exits at once, for an operator who will not wait.
func onSignals() (context.Context, func()) {
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	done := make(chan struct{})
	go func() {
		select {
		case <-sigs:
			cancel()
		case <-done:
			return
		}
		select {
		case sig := <-sigs:
			fmt.Fprintf(os.Stderr, "trellis-proxy: second %v: exiting without draining\n", sig)
			os.Exit(1)
		case <-done:
		}
	}()
	return ctx, func() {
		signal.Stop(sigs)
		close(done)
		cancel()
	}
}

func parseMetadata(kvs []string) (map[string]string, error) { return parseKeyValues("--metadata", kvs) }

func parseKeyValues(flag string, kvs []string) (map[string]string, error) {
	md := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("%s %q: want KEY=VALUE", flag, kv)
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

// identityConfig builds the identity agent's config from the flags; nil without --ca-address.
func identityConfig(caAddress, rootFile, tokenFile string) (*identity.Config, error) {
	if caAddress == "" {
		if rootFile != "" || tokenFile != "" {
			return nil, errors.New("--ca-root-cert and --token-file need --ca-address")
		}
		return nil, nil
	}
	if rootFile == "" {
		return nil, errors.New("--ca-address needs --ca-root-cert")
	}
	root, err := os.ReadFile(rootFile)
	if err != nil {
		return nil, fmt.Errorf("--ca-root-cert: %w", err)
	}
	cfg := &identity.Config{CAAddress: caAddress, RootCert: root}
	if tokenFile != "" {
		cfg.Token = func() (string, error) {
			b, err := os.ReadFile(tokenFile)
			if err != nil {
				return "", fmt.Errorf("--token-file: %w", err)
			}
			return strings.TrimSpace(string(b)), nil
		}
	}
	return cfg, nil
}
