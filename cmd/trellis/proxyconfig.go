package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/trellis-mesh/trellis/internal/controlplane"
	"github.com/trellis-mesh/trellis/internal/model"
	"github.com/trellis-mesh/trellis/internal/proxyadmin"
)

// proxyAdminPort is Istio's proxy admin port (MeshConfig proxyAdminPort).
const proxyAdminPort = "15000"

// proxyConfigFlags are shared by the proxy-config subcommands.
type proxyConfigFlags struct {
	admin, controlPlane, output string
	timeout                     time.Duration
}

func newProxyConfigCmd() *cobra.Command {
	var f proxyConfigFlags
	cmd := &cobra.Command{
		Use:   "proxy-config",
		Short: "Show what a proxy holds (certificates, authorization) and explain or diff its ProxyConfig settings",
		Long: "Reads a proxy's admin API (Envoy's /config_dump and /certs, port 15000), as\n" +
			"istioctl proxy-config does. Name the proxy as `trellis proxy-status` lists it\n" +
			"(name.namespace, a bare name, or a node ID): its address comes from the control\n" +
			"plane (--control-plane) and the node ID's IP. Or give its admin address with\n" +
			"--admin (e.g. a `kubectl port-forward` to a pod's 15000).\n\n" +
			"explain and diff work on the ProxyConfig hierarchy instead (docs/proxy-config.md):\n" +
			"from a config directory or a cluster, not from a running proxy.",
	}
	cmd.PersistentFlags().StringVar(&f.admin, "admin", "", "the proxy's admin address host:port (instead of a proxy name)")
	cmd.PersistentFlags().StringVar(&f.controlPlane, "control-plane", controlplane.DefaultDebugAddress, "the control plane's debug address, to find a proxy by name")
	cmd.PersistentFlags().StringVarP(&f.output, "output", "o", "short", "output format: short (a table) or json")
	cmd.PersistentFlags().DurationVar(&f.timeout, "timeout", 10*time.Second, "how long to wait for the control plane and the proxy")
	cmd.AddCommand(newProxyConfigSecretCmd(&f), newProxyConfigAuthzCmd(&f), newProxyConfigExplainCmd(&f), newProxyConfigDiffCmd(&f))
	return cmd
}

func newProxyConfigSecretCmd(f *proxyConfigFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "secret [proxy]",
		Short: "List the certificates a proxy holds: its workload identity and the mesh root",
		Long: "istioctl's `proxy-config secret`: each SDS secret (default: the workload's\n" +
			"certificate chain; ROOTCA: the trust bundle) with its status, whether it is\n" +
			"valid now, serial number and validity, plus the SPIFFE identity and the time\n" +
			"left before it expires. The proxy renews its certificate at half its lifetime.",
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), f.timeout)
			defer cancel()
			client, err := f.client(ctx, args)
			if err != nil {
				return err
			}
			dump, err := client.ConfigDump(ctx)
			if err != nil {
				return err
			}
			now := time.Now()
			secrets, err := proxyadmin.Secrets(dump, now)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if f.output == "json" {
				if secrets == nil {
					secrets = []proxyadmin.Secret{}
				}
				return writeJSON(out, secrets)
			}
			if len(secrets) == 0 {
				fmt.Fprintf(out, "The proxy at %s holds no secrets: it has no identity agent (no CA configured), so it has no mesh identity and no mTLS.\n", client.Addr)
				return nil
			}
			printSecrets(out, secrets, now)
			return nil
		},
	}
}

func newProxyConfigAuthzCmd(f *proxyConfigFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "authz [proxy]",
		Short: "Show the authorization in force on a proxy's listeners (RBAC, JWT, ext_authz)",
		Long: "For each inbound or gateway listener, the authorization filters requests meet,\n" +
			"in order: jwt_authn (RequestAuthentication: issuers and where their keys come\n" +
			"from), ext_authz (CUSTOM: the authorization service), then RBAC (DENY, ALLOW and\n" +
			"AUDIT policies under Istio's names ns[<ns>]-policy[<name>]-rule[<i>]). A request\n" +
			"denied by RBAC has rbac_access_denied_matched_policy[<name>] in the access log's\n" +
			"%RESPONSE_CODE_DETAILS% ([none]: no ALLOW policy matched); one denied by\n" +
			"ext_authz has the response flag UAEX.",
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), f.timeout)
			defer cancel()
			client, err := f.client(ctx, args)
			if err != nil {
				return err
			}
			dump, err := client.ConfigDump(ctx)
			if err != nil {
				return err
			}
			ls, skipped, err := proxyadmin.Authz(dump)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if f.output == "json" {
				if ls == nil {
					ls = []proxyadmin.ListenerAuthz{}
				}
				return writeJSON(out, ls)
			}
			printAuthz(out, ls, skipped)
			return nil
		},
	}
}

// client finds the proxy's admin API: --admin, or the named proxy's node ID
// IP at Istio's admin port.
func (f *proxyConfigFlags) client(ctx context.Context, args []string) (proxyadmin.Client, error) {
	if f.output != "short" && f.output != "json" {
		return proxyadmin.Client{}, fmt.Errorf("--output %q: want short or json", f.output)
	}
	if f.admin != "" {
		if len(args) > 0 {
			return proxyadmin.Client{}, fmt.Errorf("give a proxy name or --admin, not both")
		}
		return proxyadmin.Client{Addr: f.admin}, nil
	}
	if len(args) == 0 {
		return proxyadmin.Client{}, fmt.Errorf("name a proxy (name.namespace, as `trellis proxy-status` lists them) or give --admin host:port")
	}
	proxies, err := fetchSyncz(ctx, f.controlPlane)
	if err != nil {
		return proxyadmin.Client{}, err
	}
	p, err := findProxy(proxies, args[0])
	if err != nil {
		return proxyadmin.Client{}, err
	}
	node, err := model.ParseProxy(p.ProxyID)
	if err != nil {
		return proxyadmin.Client{}, fmt.Errorf("proxy %s: %w (give --admin host:port)", args[0], err)
	}
	return proxyadmin.Client{Addr: net.JoinHostPort(node.IP, proxyAdminPort)}, nil
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// printSecrets prints istioctl's columns, then the identity and time left.
func printSecrets(w io.Writer, secrets []proxyadmin.Secret, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	fmt.Fprintln(tw, "RESOURCE NAME\tTYPE\tSTATUS\tVALID CERT\tSERIAL NUMBER\tNOT AFTER\tNOT BEFORE\tSPIFFE ID\tEXPIRES IN")
	for _, s := range secrets {
		if s.SerialNumber == "" {
			fmt.Fprintf(tw, "%s\t%s\t%s\tfalse\t-\t-\t-\t-\t-\n", s.Name, orDash(s.Type), s.Status)
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%t\t%s\t%s\t%s\t%s\t%s\n", s.Name, s.Type, s.Status, s.Valid, s.SerialNumber,
			s.NotAfter.Format(time.RFC3339), s.NotBefore.Format(time.RFC3339), orDash(s.SPIFFEID), expiresIn(s, now))
	}
	tw.Flush()
}

// expiresIn is the time left: hours and minutes under two days (a workload
// certificate lives 24 h), whole days above, as /certs counts them.
func expiresIn(s proxyadmin.Secret, now time.Time) string {
	left := s.NotAfter.Sub(now)
	switch {
	case left <= 0:
		return "expired"
	case left < 48*time.Hour:
		m := int(left / time.Minute)
		return fmt.Sprintf("%dh%02dm", m/60, m%60)
	}
	return fmt.Sprintf("%d days", s.DaysUntilExpiry)
}

func printAuthz(w io.Writer, ls []proxyadmin.ListenerAuthz, skipped int) {
	if len(ls) == 0 {
		fmt.Fprintln(w, "No inbound or gateway listener, and no authorization filter on any listener.")
	}
	for i, l := range ls {
		if i > 0 {
			fmt.Fprintln(w)
		}
		for _, g := range l.Chains {
			var chains []string
			for _, c := range g.Chains {
				chains = append(chains, fmt.Sprintf("%s (%s)", c.Name, c.Transport))
			}
			fmt.Fprintf(w, "Listener %s (%s), filter chains %s:\n", l.Listener, strings.ToLower(l.Direction), strings.Join(chains, ", "))
			if len(g.Filters) == 0 {
				fmt.Fprintln(w, "  no authorization filter: every request is allowed")
				continue
			}
			tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
			fmt.Fprintln(tw, "  FILTER\tACTION\tNAME\tDETAIL")
			for _, f := range g.Filters {
				for _, row := range authzRows(f) {
					fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", f.Kind, row[0], row[1], row[2])
				}
			}
			tw.Flush()
		}
	}
	if skipped > 0 {
		fmt.Fprintf(w, "\n(%d outbound listeners without authorization filters not shown.)\n", skipped)
	}
	fmt.Fprintln(w, "\nA denied request's access log names the policy: rbac_access_denied_matched_policy[<NAME>]\n"+
		"([none]: no ALLOW policy matched); ext_authz denials have the response flag UAEX.")
}

// authzRows are a filter's rows: action, name, detail.
func authzRows(f proxyadmin.Filter) [][3]string {
	var rows [][3]string
	switch f.Kind {
	case proxyadmin.KindJWT:
		for _, p := range f.Providers {
			d := fmt.Sprintf("issuer %s, jwks %s", p.Issuer, p.JWKS)
			if len(p.Audiences) > 0 {
				d += ", audiences " + strings.Join(p.Audiences, " ")
			}
			rows = append(rows, [3]string{f.Action, p.Name, d})
		}
		for _, r := range f.Requirements {
			rows = append(rows, [3]string{"REQUIRE", "-", r})
		}
	case proxyadmin.KindExtAuthz:
		x := f.ExtAuthz
		d := x.Protocol
		if x.URI != "" {
			d += " " + x.URI + x.PathPrefix
		}
		if x.FailureOpen {
			d += ", fail open"
		} else {
			d += ", fail closed"
		}
		if x.EnabledBy != "" {
			d += ", only for requests with " + x.EnabledBy
		}
		rows = append(rows, [3]string{f.Action, x.Cluster, d})
	default:
		action := f.Action
		if action == "LOG" {
			action = "LOG (AUDIT)"
		}
		if len(f.Policies) == 0 {
			d := "no policy"
			if f.Action == "ALLOW" {
				d = "no policy: every request is denied (allow-nothing)"
			}
			rows = append(rows, [3]string{action, "-", d})
		}
		detail := ""
		if strings.HasPrefix(f.Action, "SHADOW ") {
			detail = "evaluated, never enforced (dry run)"
			if f.StatPrefix == "istio_ext_authz_" {
				detail = "selects the requests ext_authz checks (CUSTOM)"
			}
		}
		for _, p := range f.Policies {
			rows = append(rows, [3]string{action, p, detail})
		}
	}
	return rows
}
