package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/trellis-mesh/trellis/examples/demo"
	"github.com/trellis-mesh/trellis/internal/controlplane"
	"github.com/trellis-mesh/trellis/internal/localmesh"
	"github.com/trellis-mesh/trellis/internal/ui"
)

func newUpCmd() *cobra.Command {
	var (
		configDir string
		xds       string
		debug     string
		uiAddr    string
		caDir     string
		reset     bool
		apps      bool
		logs      logFlags
	)
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Run a whole local mesh: control plane, proxies, ingress gateway (and the demo)",
		Long: "Starts the control plane and one proxy per WorkloadEntry on a loopback address\n" +
			"(127.0.0.0/8), no root or cluster needed. Without --config-dir it runs the demo\n" +
			"mesh from examples/demo, whose Istio config is written to ~/.trellis/demo for\n" +
			"you to edit; changes apply live. Ctrl-C stops everything it started.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := logs.logger(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			runDemo := configDir == ""
			if runDemo {
				if configDir, err = demoConfigDir(reset); err != nil {
					return err
				}
			}
			if !cmd.Flags().Changed("demo-apps") {
				apps = runDemo
			}
			ctx, cancel := context.WithCancel(cmd.Context())
			defer cancel()

			appErr := make(chan error, 1)
			if apps {
				go func() {
					err := demo.RunApps(ctx, log.With("component", "app"))
					if err != nil {
						cancel() // the mesh is no use without its apps
					}
					appErr <- err
				}()
			} else {
				close(appErr)
			}
			out := cmd.OutOrStdout()
			err = localmesh.Run(ctx, localmesh.Options{
				ConfigDir:    configDir,
				XDSAddress:   xds,
				DebugAddress: debug,
				Logger:       log,
				Ready:        func(m localmesh.Mesh) { printMesh(out, m, configDir) },
				UIAddress:    uiAddr,
				CADir:        caDir,
				OnConfigError: func(err error) {
					fmt.Fprintf(out, "\nConfig rejected; the last good config keeps serving:\n  %s\n",
						strings.ReplaceAll(err.Error(), "\n", "\n  "))
				},
			})
			cancel()
			if aerr := <-appErr; aerr != nil {
				return aerr
			}
			return err
		},
	}
	cmd.Flags().StringVar(&configDir, "config-dir", "", "directory of Istio YAML to run (default: the demo, written to ~/.trellis/demo)")
	cmd.Flags().StringVar(&xds, "xds-address", controlplane.DefaultXDSAddress, "address the control plane serves xDS on")
	cmd.Flags().StringVar(&debug, "debug-address", controlplane.DefaultDebugAddress, "address the control plane serves metrics and debug endpoints on (\"\" disables them)")
	cmd.Flags().StringVar(&uiAddr, "ui-address", ui.DefaultAddress, `address to serve the console on ("" for none)`)
	cmd.Flags().StringVar(&caDir, "ca-dir", defaultCADir(), "directory keeping the mesh CA's root, which issues every proxy's certificate (\"\": a new CA each run)")
	cmd.Flags().BoolVar(&reset, "reset", false, "rewrite the demo config in ~/.trellis/demo, discarding your edits")
	cmd.Flags().BoolVar(&apps, "demo-apps", false, "run the demo apps (default: only when running the demo)")
	cmd.Flags().StringVar(&logs.level, "log-level", "warn", "log level: debug, info, warn or error")
	return cmd
}

// demoConfigDir writes the demo's config where the user can edit it, and
// keeps earlier edits unless reset is set.
func demoConfigDir(reset bool) (string, error) {
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("finding a home for the demo config (use --config-dir): %w", err)
	}
	dir := filepath.Join(home, ".trellis", "demo")
	if reset {
		if err := os.RemoveAll(dir); err != nil {
			return "", fmt.Errorf("--reset: %w", err)
		}
	}
	if err := demo.WriteConfig(dir); err != nil && !errors.Is(err, fs.ErrExist) {
		return "", fmt.Errorf("writing the demo config to %s: %w", dir, err)
	}
	return dir, nil
}

func printMesh(w io.Writer, m localmesh.Mesh, configDir string) {
	fmt.Fprintf(w, "Trellis local mesh is up.\n\n")
	for _, p := range m.Proxies {
		for _, u := range p.Entrypoints {
			fmt.Fprintf(w, "  Ingress gateway (front page):   %s\n", u)
		}
	}
	fmt.Fprintf(w, "  Config (edit; applies live):    %s\n", configDir)
	fmt.Fprintf(w, "  Control plane xDS:              %s\n", m.XDSAddress)
	if m.DebugAddress != "" {
		fmt.Fprintf(w, "  Control plane metrics, debug:   http://%s/metrics  http://%s/debug/syncz  (trellis proxy-status)\n", m.DebugAddress, m.DebugAddress)
	}
	if m.UIAddress != "" {
		fmt.Fprintf(w, "  Console (trellis dashboard):    http://%s/\n", m.UIAddress)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "  Proxies (admin: /ready /config_dump /stats; Istio metrics: 15020/stats/prometheus):\n")
	for _, p := range m.Proxies {
		fmt.Fprintf(w, "    %-36s http://%s/", p.Name, p.AdminAddress)
		if p.StatusAddress != "" {
			fmt.Fprintf(w, "  http://%s/stats/prometheus", p.StatusAddress)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "\nPress Ctrl-C to stop.\n")
}

// defaultCADir is the CA directory `trellis up` keeps across runs, so
// proxies' certificates chain to the same root each time; "" when there is
// no home to keep it in (the mesh then makes a CA for this run only).
func defaultCADir() string {
	dir, err := controlplane.DefaultCADir()
	if err != nil {
		return ""
	}
	return dir
}
