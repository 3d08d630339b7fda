package main

import (
	"errors"
	"fmt"
	"io/fs"
	"time"

	"github.com/spf13/cobra"

	"github.com/trellis-mesh/trellis/internal/controlplane"
	"github.com/trellis-mesh/trellis/internal/security/ca"
)

func newTokenCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Bootstrap tokens that let proxies obtain their identity from the CA",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(newTokenCreateCmd())
	return cmd
}

func newTokenCreateCmd() *cobra.Command {
	var (
		ns, sa        string
		ttl           time.Duration
		caDir, caCert string
	)
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Print a bootstrap token for a namespace's service account",
		Long: "Prints a bootstrap token (an ES256 JWT signed with a key derived from the\n" +
			"CA's) for spiffe://<trust-domain>/ns/NS/sa/SA. A proxy sends it to the\n" +
			"control plane's CA (trellis-proxy --token-file) to obtain certificates for\n" +
			"that identity until the token expires. It is a secret: whoever holds it\n" +
			"can act as that service account. Reads the CA the control plane uses\n" +
			"(--ca-dir or --cacerts, as given to `trellis controlplane`); it does not\n" +
			"need the control plane to run.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var (
				auth *ca.Authority
				err  error
			)
			if caCert != "" {
				auth, err = ca.LoadCACerts(caCert, ca.Options{})
			} else {
				if caDir == "" {
					if caDir, err = controlplane.DefaultCADir(); err != nil {
						return err
					}
				}
				auth, err = ca.LoadDir(caDir, ca.Options{})
				if errors.Is(err, fs.ErrNotExist) {
					return fmt.Errorf("no CA in %s: start `trellis controlplane --ca-dir %s` once to create it, or pass the --ca-dir it uses", caDir, caDir)
				}
			}
			if err != nil {
				return err
			}
			token, err := auth.MintBootstrapToken(ns, sa, ttl)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), token)
			return err
		},
	}
	cmd.Flags().StringVar(&ns, "namespace", "", "namespace of the workload (required)")
	cmd.Flags().StringVar(&sa, "service-account", "", "service account of the workload (required)")
	cmd.Flags().DurationVar(&ttl, "ttl", 24*time.Hour, "how long the token is valid")
	cmd.Flags().StringVar(&caDir, "ca-dir", "", "the control plane's --ca-dir (default $XDG_STATE_HOME/trellis/ca or ~/.trellis/ca)")
	cmd.Flags().StringVar(&caCert, "cacerts", "", "the control plane's --cacerts directory, when it uses your own CA")
	cmd.MarkFlagsMutuallyExclusive("ca-dir", "cacerts")
	_ = cmd.MarkFlagRequired("namespace")
	_ = cmd.MarkFlagRequired("service-account")
	return cmd
}
