package main

import (
	"fmt"
	"log/slog"
	"net"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/trellis-mesh/trellis/internal/controlplane"
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
			"(reason TrellisValidationFailed). See docs/kubernetes.md.",
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
			if opts.CAAddress != "" && opts.CADir == "" && opts.CACertsDir == "" {
				if opts.CADir, err = controlplane.DefaultCADir(); err != nil {
					return err
				}
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
	cmd.Flags().StringVar(&opts.CAAddress, "ca-address", controlplane.DefaultCAAddress, `address to serve the CA on (Istio's CreateCertificate over TLS, istiod's 15012); "" disables it`)
	cmd.Flags().StringVar(&opts.CADir, "ca-dir", "", "directory keeping the CA's self-signed root, created on first start (default $XDG_STATE_HOME/trellis/ca or ~/.trellis/ca)")
	cmd.Flags().StringVar(&opts.CACertsDir, "cacerts", "", "directory with your own CA in Istio's cacerts layout (ca-cert.pem, ca-key.pem, root-cert.pem, cert-chain.pem); replaces --ca-dir")
	cmd.MarkFlagsMutuallyExclusive("ca-dir", "cacerts")
	logs.register(cmd)
	return cmd
}
