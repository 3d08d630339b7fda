package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/trellis-mesh/trellis/internal/intercept"
)

// newIptablesCommand is the init container's job: istio-iptables' flags, applied with
// iptables-restore in the current network namespace.
func newIptablesCommand() *cobra.Command {
	var (
		c                               intercept.Config
		envoyPort, inboundPort          uint16
		uid, gid                        uint32
		inboundPorts, inboundExclude    string
		outboundRanges, outboundExclude string
		outboundPortsExclude            string
		outboundPortsInclude            string
		dryRun, cleanup                 bool
	)
	cmd := &cobra.Command{
		Use:   "iptables",
		Short: "Install Istio's traffic capture rules (nat table) in this network namespace",
		Long: "Redirects the app's outbound TCP to the proxy (15001) and inbound TCP to 15006, as istio-iptables " +
			"in Istio's istio-init container; the proxy's own traffic (UID/GID 1337) is left alone. Idempotent.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			if cleanup {
				return fail(intercept.Cleanup(ctx))
			}
			c.OutboundCapturePort, c.InboundCapturePort = envoyPort, inboundPort
			c.ProxyUID, c.ProxyGID = uid, gid
			c.IncludeInboundPorts = orNone(inboundPorts)
			c.IncludeOutboundCIDRs = orNone(outboundRanges)
			var err error
			if c.ExcludeInboundPorts, err = intercept.ParsePorts("--local-exclude-ports", inboundExclude); err != nil {
				return fail(err)
			}
			if c.ExcludeOutboundPorts, err = intercept.ParsePorts("--local-exclude-ports-outbound", outboundPortsExclude); err != nil {
				return fail(err)
			}
			if c.IncludeOutboundPorts, err = intercept.ParsePorts("--include-outbound-ports", outboundPortsInclude); err != nil {
				return fail(err)
			}
			for _, s := range strings.Split(outboundExclude, ",") {
				if s = strings.TrimSpace(s); s != "" {
					c.ExcludeOutboundCIDRs = append(c.ExcludeOutboundCIDRs, s)
				}
			}
			if dryRun {
				text, err := intercept.DryRun(c)
				if err != nil {
					return fail(err)
				}
				_, err = fmt.Fprint(cmd.OutOrStdout(), text)
				return err
			}
			return fail(intercept.Apply(ctx, c))
		},
	}
	f := cmd.Flags()
	f.Uint16VarP(&envoyPort, "envoy-port", "p", intercept.DefaultOutboundCapturePort, "port outbound TCP is redirected to")
	f.Uint16VarP(&inboundPort, "inbound-capture-port", "z", intercept.DefaultInboundCapturePort, "port inbound TCP is redirected to")
	f.Uint32VarP(&uid, "proxy-uid", "u", intercept.DefaultProxyUID, "UID of the proxy: its traffic is not captured")
	f.Uint32VarP(&gid, "proxy-gid", "g", 0, "GID of the proxy: its traffic is not captured (default: the UID)")
	f.StringVarP(&inboundPorts, "inbound-ports", "b", "*", `inbound ports to capture, comma-separated; "*" all, "" none`)
	f.StringVarP(&inboundExclude, "local-exclude-ports", "d", "", "inbound ports not captured with -b '*' (15020, 15021, 15090 always are not)")
	f.StringVarP(&outboundRanges, "outbound-ip-ranges", "i", "*", `outbound CIDRs to capture, comma-separated; "*" all, "" none`)
	f.StringVarP(&outboundExclude, "outbound-ip-ranges-exclude", "x", "", "outbound CIDRs never captured, comma-separated")
	f.StringVarP(&outboundPortsExclude, "local-exclude-ports-outbound", "o", "", "outbound ports never captured, comma-separated")
	f.StringVarP(&outboundPortsInclude, "include-outbound-ports", "q", "", "outbound ports always captured, whatever -i says (-x and -o still win), comma-separated")
	f.BoolVar(&c.DNS, "redirect-dns", false, "redirect the app's DNS (UDP and TCP 53) to the proxy's DNS port 15053")
	f.BoolVarP(&dryRun, "dry-run", "n", false, "print the iptables-restore input instead of applying it")
	f.BoolVar(&cleanup, "cleanup", false, "remove every ISTIO_* chain and jump instead of installing the rules")
	return cmd
}

// orNone maps istio-iptables' empty list ("capture none") to intercept.None; Config's "" means "*".
func orNone(s string) string {
	if strings.TrimSpace(s) == "" {
		return intercept.None
	}
	return s
}
