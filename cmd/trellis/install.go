package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/trellis-mesh/trellis/internal/install"
)

func newInstallCmd() *cobra.Command {
	var (
		opts             install.Options
		caBundle, caDir  string
		caCerts          string
		crdsOnly, noCRDs bool
	)
	cmd := &cobra.Command{
		Use:   "install",
		Short: "Print the manifests that install Trellis on Kubernetes",
		Long: "Prints, as one YAML stream, Istio's CRDs, the control plane's Namespace, RBAC,\n" +
			"Deployment, PodDisruptionBudget and Services, the istio ConfigMap (MeshConfig\n" +
			"under `mesh`) and the sidecar injector's MutatingWebhookConfiguration:\n\n" +
			"  trellis install --image IMAGE | kubectl apply --server-side -f -\n\n" +
			"The webhook's caBundle is --ca-bundle, else the root in --cacerts or --ca-dir,\n" +
			"else left empty: the control plane's leader keeps it equal to its CA's root\n" +
			"(the cacerts Secret if you create one, else istio-ca-secret), as istiod.\n" +
			"See docs/install.md.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch {
			case crdsOnly:
				opts.Include = install.CRDsOnly
			case noCRDs:
				opts.Include = install.ControlPlane
			}
			if opts.Include != install.CRDsOnly {
				var err error
				switch {
				case caBundle != "":
					opts.CABundle, err = os.ReadFile(caBundle)
					if err != nil {
						err = fmt.Errorf("--ca-bundle: %w", err)
					}
				case caCerts != "":
					opts.CABundle, err = install.CABundleFromDir(caCerts)
				case caDir != "":
					opts.CABundle, err = install.CABundleFromDir(caDir)
				default:
					// No root is needed: the control plane's leader patches
					// its own into the webhooks. The local CA directory of
					// `trellis up` is not the cluster's CA and is not read.
				}
				if err != nil {
					return err
				}
			}
			out, err := install.Render(opts)
			if err != nil {
				return fmt.Errorf("install: %w", err)
			}
			_, err = cmd.OutOrStdout().Write(out)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVarP(&opts.Namespace, "namespace", "n", install.DefaultNamespace, "namespace of the control plane (Istio's root namespace)")
	f.StringVar(&opts.Image, "image", "", "container image with the trellis binary on PATH (required unless --crds-only)")
	f.Int32Var(&opts.Replicas, "replicas", install.DefaultReplicas, "control-plane replicas; every one serves xDS")
	f.StringVar(&opts.TrustDomain, "trust-domain", install.DefaultTrustDomain, "MeshConfig trustDomain in the istio ConfigMap")
	f.StringVar(&caBundle, "ca-bundle", "", "PEM file of the root that signed the webhook's certificate")
	f.StringVar(&caCerts, "cacerts", "", "directory in Istio's cacerts layout; its root-cert.pem is the CA bundle")
	f.StringVar(&caDir, "ca-dir", "", "CA directory of `trellis controlplane --ca-dir` whose ca-cert.pem is the CA bundle")
	f.BoolVar(&crdsOnly, "crds-only", false, "print Istio's CRDs only")
	f.BoolVar(&noCRDs, "skip-crds", false, "leave Istio's CRDs out (they are installed already)")
	cmd.MarkFlagsMutuallyExclusive("crds-only", "skip-crds")
	cmd.MarkFlagsMutuallyExclusive("ca-bundle", "cacerts", "ca-dir")
	return cmd
}
