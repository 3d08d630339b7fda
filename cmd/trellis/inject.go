package main

import (
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/trellis-mesh/trellis/internal/config"
	"github.com/trellis-mesh/trellis/internal/inject"
)

func newInjectCmd() *cobra.Command {
	var (
		file, configDir, output string
		p                       = inject.DefaultParams()
	)
	cmd := &cobra.Command{
		Use:   "inject -f FILE",
		Short: "Add the Trellis sidecar to the pods of Kubernetes YAML (istioctl kube-inject)",
		Long: "Reads multi-document YAML and adds the sidecar (istio-init and istio-proxy running\n" +
			"trellis-proxy) to every Pod and to the pod template of every Deployment, StatefulSet,\n" +
			"DaemonSet, ReplicaSet, Job and CronJob; everything else is written unchanged.\n" +
			"Namespace labels are not known here, so every pod is injected unless it opts out\n" +
			"(sidecar.istio.io/inject=false). The sidecar's settings come from the pod's\n" +
			"annotations and, with --config, from the ProxyConfigs and MeshConfig of a config dir.",
		Example: "  trellis inject -f deployment.yaml | kubectl apply -f -\n" +
			"  trellis inject -f app.yaml --config ./mesh -o app-injected.yaml",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			in, err := readInput(cmd.InOrStdin(), file)
			if err != nil {
				return err
			}
			opts := inject.FileOptions{Params: p}
			if configDir != "" {
				cfg, _, err := config.LoadDir(configDir)
				if err != nil {
					return err
				}
				opts.Mesh, opts.ProxyConfigs = cfg.Mesh, config.ProxyConfigResources(cfg)
			}
			out, warnings, err := inject.InjectYAML(in, opts)
			if err != nil {
				return fmt.Errorf("%s: %w", file, err)
			}
			for _, w := range warnings {
				fmt.Fprintln(cmd.ErrOrStderr(), "warning:", w)
			}
			if output == "" || output == "-" {
				_, err = cmd.OutOrStdout().Write(out)
				return err
			}
			return os.WriteFile(output, out, 0o644)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&file, "filename", "f", "", `input YAML ("-" for stdin)`)
	f.StringVar(&configDir, "config", "", "config dir whose ProxyConfigs and MeshConfig (mesh.yaml) apply")
	f.StringVarP(&output, "output", "o", "", "output file (default stdout)")
	f.StringVar(&p.ProxyImage, "image", p.ProxyImage, "trellis-proxy image")
	f.StringVar(&p.XDSAddress, "xds-address", p.XDSAddress, "control plane xDS address (15010)")
	f.StringVar(&p.CAAddress, "ca-address", p.CAAddress, `CA address (15012); "" for no workload certificates`)
	f.StringVar(&p.TrustDomain, "trust-domain", p.TrustDomain, "mesh trust domain")
	f.StringVar(&p.ClusterID, "cluster-id", "", "ISTIO_META_CLUSTER_ID of the proxies")
	f.StringVar(&p.Network, "network", "", "ISTIO_META_NETWORK of the proxies")
	f.BoolVar(&p.NativeSidecars, "native-sidecars", p.NativeSidecars, "run the proxy as a Kubernetes native sidecar (init container with restartPolicy Always, 1.29+)")
	_ = cmd.MarkFlagRequired("filename")
	return cmd
}

func readInput(stdin io.Reader, file string) ([]byte, error) {
	if file == "-" {
		return io.ReadAll(stdin)
	}
	return os.ReadFile(file)
}
