package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/trellis-mesh/trellis/internal/controlplane"
	"github.com/trellis-mesh/trellis/internal/inject"
	"github.com/trellis-mesh/trellis/internal/ui"
)

func newControlPlaneCmd() *cobra.Command {
	var (
		opts       controlplane.Options
		logs       logFlags
		xdsPort    uint16
		kubeconfig string
		kube       bool
	)
	cmd := &cobra.Command{
		Use:   "controlplane",
		Short: "Serve Envoy xDS (ADS) from a directory of Istio YAML or a Kubernetes cluster",
		Long: "Watches --config-dir for Istio resources (VirtualService, DestinationRule,\n" +
			"ServiceEntry, WorkloadEntry, Gateway, Sidecar, and MeshConfig in mesh.yaml)\n" +
			"and serves them to proxies over ADS. A change is applied within a second;\n" +
			"an invalid change is logged and the last good config keeps serving.\n\n" +
			"With --kubernetes (in a Pod: its service account) or --kubeconfig PATH it reads\n" +
			"a cluster instead: Services, EndpointSlices, Pods, the istio ConfigMap and\n" +
			"Istio's resources; an invalid resource is left out and gets a Warning Event\n" +
			"(reason TrellisValidationFailed). With --webhook-address it also serves Istio's\n" +
			"sidecar injection webhook. See docs/kubernetes.md and docs/injection.md.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := logs.logger(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			// Packages that log through slog's default (config's warnings)
			// then follow --log-level too.
			prev := slog.Default()
			slog.SetDefault(log)
			defer slog.SetDefault(prev)
			if cmd.Flags().Changed("xds-port") {
				host, _, err := net.SplitHostPort(opts.XDSAddress)
				if err != nil {
					return fmt.Errorf("--xds-address %q: %w", opts.XDSAddress, err)
				}
				opts.XDSAddress = net.JoinHostPort(host, strconv.Itoa(int(xdsPort)))
			}
			// In Kubernetes mode the root lives in the cluster (istio-ca-secret
			// or cacerts), as istiod keeps it, unless a directory is named.
			if opts.CAAddress != "" && opts.CADir == "" && opts.CACertsDir == "" && !kube && kubeconfig == "" {
				if opts.CADir, err = controlplane.DefaultCADir(); err != nil {
					return err
				}
			}
			if opts.WebhookAddress != "" && !kube && kubeconfig == "" {
				return errors.New("--webhook-address needs --kubernetes or --kubeconfig: the webhook reads namespaces and ProxyConfigs from the cluster")
			}
			if kube || kubeconfig != "" {
				if opts.Kubernetes, err = controlplane.KubernetesConfig(kubeconfig); err != nil {
					return fmt.Errorf("kubernetes: %w", err)
				}
			}
			opts.Logger = log
			return controlplane.Run(cmd.Context(), opts)
		},
	}
	cmd.Flags().StringVar(&opts.ConfigDir, "config-dir", "", "directory of Istio YAML to serve")
	cmd.Flags().BoolVar(&kube, "kubernetes", false, "read config from the Kubernetes cluster this runs in (in-cluster service account), or the one --kubeconfig names")
	cmd.Flags().StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig file of the cluster to read config from (implies --kubernetes)")
	cmd.Flags().StringVar(&opts.IstioNamespace, "istio-namespace", "istio-system", "namespace of the istio ConfigMap whose `mesh` key is the MeshConfig (with --kubernetes)")
	cmd.MarkFlagsMutuallyExclusive("config-dir", "kubernetes")
	cmd.MarkFlagsMutuallyExclusive("config-dir", "kubeconfig")
	cmd.MarkFlagsOneRequired("config-dir", "kubernetes", "kubeconfig")
	cmd.Flags().StringVar(&opts.XDSAddress, "xds-address", controlplane.DefaultXDSAddress, "address to serve xDS (ADS, plaintext gRPC) on")
	cmd.Flags().StringVar(&opts.UIAddress, "ui-address", "", "address to serve the console on, e.g. "+ui.DefaultAddress+` ("" for none)`)
	cmd.Flags().Uint16Var(&xdsPort, "xds-port", 15010, "port to serve xDS on (replaces the port of --xds-address)")
	cmd.Flags().StringVar(&opts.DebugAddress, "debug-address", controlplane.DefaultDebugAddress, "address to serve metrics (/metrics) and debug endpoints (/debug/syncz, /debug/configz, ...) on; \"\" disables them")
	cmd.Flags().StringSliceVar(&opts.AutoScope, "auto-scope", nil, `namespaces ("*" for all) whose sidecars get only the services they were observed calling, plus their own namespace's and the root namespace's; a Sidecar resource always wins (docs/scoping.md)`)
	cmd.Flags().DurationVar(&opts.AutoScopeTTL, "auto-scope-ttl", 0, "how long an observed dependency stays in an automatic scope after it was last seen (default 1h)")
	cmd.Flags().StringVar(&opts.CAAddress, "ca-address", controlplane.DefaultCAAddress, `address to serve the CA on (Istio's CreateCertificate over TLS, istiod's 15012); "" disables it`)
	cmd.Flags().StringVar(&opts.CADir, "ca-dir", "", "directory keeping the CA's self-signed root, created on first start (default $XDG_STATE_HOME/trellis/ca or ~/.trellis/ca; with --kubernetes the istio-ca-secret Secret, or cacerts, as istiod)")
	cmd.Flags().StringVar(&opts.CACertsDir, "cacerts", "", "directory with your own CA in Istio's cacerts layout (ca-cert.pem, ca-key.pem, root-cert.pem, cert-chain.pem); replaces --ca-dir")
	cmd.MarkFlagsMutuallyExclusive("ca-dir", "cacerts")
	cmd.Flags().StringVar(&opts.WebhookAddress, "webhook-address", "", `address to serve Istio's sidecar injection webhook on (HTTPS POST /inject, istiod's 15017), e.g. ":15017"; needs --kubernetes and the CA, whose root verifies it ("" disables it)`)
	cmd.Flags().StringVar(&opts.Inject.ProxyImage, "proxy-image", inject.DefaultProxyImage, "trellis-proxy image the webhook injects")
	cmd.Flags().BoolVar(&opts.Inject.NativeSidecars, "native-sidecars", inject.DefaultParams().NativeSidecars, "inject the proxy as a Kubernetes native sidecar (init container with restartPolicy Always, 1.29+)")
	cmd.Flags().StringVar(&opts.Inject.XDSAddress, "injected-xds-address", "", "xDS address injected proxies dial (default istiod.<istio-namespace>.svc:15010)")
	cmd.Flags().StringVar(&opts.Inject.CAAddress, "injected-ca-address", "", "CA address injected proxies dial (default istiod.<istio-namespace>.svc:15012)")
	logs.register(cmd)
	return cmd
}
