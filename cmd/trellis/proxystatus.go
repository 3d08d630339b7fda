package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/trellis-mesh/trellis/internal/controlplane"
	"github.com/trellis-mesh/trellis/internal/cpdebug"
	"github.com/trellis-mesh/trellis/internal/model"
	"github.com/trellis-mesh/trellis/internal/xds"
)

func newProxyStatusCmd() *cobra.Command {
	var (
		addr    string
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "proxy-status [proxy-name-or-id]",
		Short: "Show whether each proxy has the control plane's latest config, per xDS type",
		Long: "Reads /debug/syncz from the control plane's debug address and prints, as\n" +
			"istioctl proxy-status does, each connected proxy's CDS, LDS, EDS and RDS state:\n" +
			"SYNCED (the proxy ACKed the last version sent), NOT SENT (nothing of that type\n" +
			"was sent) or STALE (sent but not ACKed: in flight, or rejected; the rejection\n" +
			"is shown). With a proxy's name (name.namespace, or just name) or node ID it\n" +
			"prints that proxy's versions and its last rejection.",
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			proxies, err := fetchSyncz(ctx, addr)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if len(args) == 0 {
				printStatusTable(out, proxies, addr)
				return nil
			}
			p, err := findProxy(proxies, args[0])
			if err != nil {
				return err
			}
			printProxyDetail(out, p)
			return nil
		},
	}
	cmd.Flags().StringVar(&addr, "control-plane", controlplane.DefaultDebugAddress, "the control plane's debug address (host:port of /debug/syncz)")
	cmd.Flags().DurationVar(&timeout, "timeout", 10*time.Second, "how long to wait for the control plane")
	return cmd
}

// fetchSyncz reads the control plane's sync status.
func fetchSyncz(ctx context.Context, addr string) ([]cpdebug.SyncStatus, error) {
	url := "http://" + addr + "/debug/syncz"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("--control-plane %q: %w", addr, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cannot reach the control plane at %s (is it running? set --control-plane to its debug address): %w", addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("control plane at %s: GET /debug/syncz: %s: %s", addr, resp.Status, strings.TrimSpace(string(body)))
	}
	var out []cpdebug.SyncStatus
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, fmt.Errorf("control plane at %s: GET /debug/syncz: %w", addr, err)
	}
	return out, nil
}

// printStatusTable prints istioctl's table. NAME is istioctl's
// "pod.namespace" (the node ID's middle field); ISTIOD is the control plane
// instance that answered, here its debug address. Rejections are listed
// under the table, where a long message does not break its columns.
func printStatusTable(w io.Writer, proxies []cpdebug.SyncStatus, cp string) {
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	fmt.Fprintln(tw, "NAME\tCLUSTER\tCDS\tLDS\tEDS\tRDS\tISTIOD\tVERSION")
	var nacks []string
	for _, p := range proxies {
		cells := make([]string, 0, len(xdsTypes))
		for _, t := range xdsTypes {
			st, nacked := typeStatus(p, t.column)
			if nacked {
				st += " (NACK)"
				nacks = append(nacks, fmt.Sprintf("  %s %s: %s", proxyName(p.ProxyID), t.column, oneLine(p.LastNACK.Message)))
			}
			cells = append(cells, st)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", proxyName(p.ProxyID), orDash(p.ClusterID),
			cells[0], cells[1], cells[2], cells[3], cp, orDash(p.IstioVersion))
	}
	tw.Flush()
	if len(nacks) > 0 {
		fmt.Fprintln(w, "\nRejected by the proxy (NACK); it keeps its previous config:")
		for _, n := range nacks {
			fmt.Fprintln(w, n)
		}
	}
}

// xdsTypes maps the table's columns, in istioctl's order, to syncz fields
// and type URLs.
var xdsTypes = []struct {
	column, typeURL string
	versions        func(cpdebug.SyncStatus) (sent, acked string)
}{
	{"CDS", "type.googleapis.com/envoy.config.cluster.v3.Cluster", func(p cpdebug.SyncStatus) (string, string) { return p.ClusterSent, p.ClusterAcked }},
	{"LDS", "type.googleapis.com/envoy.config.listener.v3.Listener", func(p cpdebug.SyncStatus) (string, string) { return p.ListenerSent, p.ListenerAcked }},
	{"EDS", "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment", func(p cpdebug.SyncStatus) (string, string) { return p.EndpointSent, p.EndpointAcked }},
	{"RDS", "type.googleapis.com/envoy.config.route.v3.RouteConfiguration", func(p cpdebug.SyncStatus) (string, string) { return p.RouteSent, p.RouteAcked }},
}

// typeStatus is one type's sync word, and whether it is STALE because the
// proxy rejected the version last sent.
func typeStatus(p cpdebug.SyncStatus, column string) (status string, nacked bool) {
	for _, t := range xdsTypes {
		if t.column != column {
			continue
		}
		sent, acked := t.versions(p)
		st := xds.SyncStatus(sent, acked)
		return st, st == xds.Stale && p.LastNACK != nil && p.LastNACK.TypeURL == t.typeURL && p.LastNACK.Version == sent
	}
	return "", false
}

func printProxyDetail(w io.Writer, p cpdebug.SyncStatus) {
	fmt.Fprintf(w, "Proxy:       %s\n", p.ProxyID)
	if p.IstioVersion != "" {
		fmt.Fprintf(w, "Version:     %s\n", p.IstioVersion)
	}
	if p.ClusterID != "" {
		fmt.Fprintf(w, "Cluster:     %s\n", p.ClusterID)
	}
	if !p.ConnectedAt.IsZero() {
		fmt.Fprintf(w, "Connected:   %s\n", p.ConnectedAt.Format(time.RFC3339))
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	fmt.Fprintln(tw, "TYPE\tSTATUS\tSENT\tACKED")
	for _, t := range xdsTypes {
		sent, acked := t.versions(p)
		st, nacked := typeStatus(p, t.column)
		if nacked {
			st += " (NACK)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", t.column, st, orDash(sent), orDash(acked))
	}
	tw.Flush()
	fmt.Fprintln(w)
	if n := p.LastNACK; n != nil {
		fmt.Fprintf(w, "Last NACK:   %s version %s at %s\n             %s\n", shortType(n.TypeURL), orDash(n.Version),
			n.At.Format(time.RFC3339), n.Message)
	} else {
		fmt.Fprintln(w, "Last NACK:   none")
	}
	if p.LastError != "" {
		fmt.Fprintf(w, "Config error (the proxy keeps its previous config): %s\n", p.LastError)
	}
}

// findProxy matches a node ID exactly, else the proxy name
// (name.namespace), else a bare name when it is unambiguous.
func findProxy(proxies []cpdebug.SyncStatus, arg string) (cpdebug.SyncStatus, error) {
	var byName []cpdebug.SyncStatus
	for _, p := range proxies {
		name := proxyName(p.ProxyID)
		if p.ProxyID == arg || name == arg {
			return p, nil
		}
		if strings.TrimSuffix(name, "."+namespaceOf(name)) == arg {
			byName = append(byName, p)
		}
	}
	switch len(byName) {
	case 1:
		return byName[0], nil
	case 0:
		return cpdebug.SyncStatus{}, fmt.Errorf("no connected proxy named %q (give name.namespace or a node ID; `trellis proxy-status` lists them)", arg)
	}
	var names []string
	for _, p := range byName {
		names = append(names, proxyName(p.ProxyID))
	}
	return cpdebug.SyncStatus{}, fmt.Errorf("%q matches %d proxies (%s): give name.namespace", arg, len(byName), strings.Join(names, ", "))
}

// proxyName is istioctl's NAME: the node ID's "pod.namespace" field, or the
// whole ID when it does not parse.
func proxyName(id string) string {
	p, err := model.ParseProxy(id)
	if err != nil {
		return id
	}
	return p.Name + "." + p.Namespace
}

func namespaceOf(name string) string {
	if i := strings.LastIndexByte(name, '.'); i >= 0 {
		return name[i+1:]
	}
	return ""
}

func shortType(url string) string {
	for _, t := range xdsTypes {
		if t.typeURL == url {
			return t.column
		}
	}
	return url
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// oneLine keeps a message on its line of the listing.
func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
