package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/trellis-mesh/trellis/internal/ui"
)

func newDashboardCmd() *cobra.Command {
	var (
		address   string
		browser   bool
		synthetic int
	)
	cmd := &cobra.Command{
		Use:   "dashboard",
		Short: "Print the console's URL (and open it with --browser)",
		Long: "Checks that the console of a running control plane answers at --address\n" +
			"(`trellis up` serves it on " + ui.DefaultAddress + "; `trellis controlplane` with\n" +
			"--ui-address), prints its URL and, with --browser, opens it with xdg-open.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			url, err := consoleURL(address)
			if err != nil {
				return err
			}
			if synthetic > 0 {
				return serveSynthetic(cmd, address, synthetic)
			}
			if err := checkConsole(cmd.Context(), url); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Trellis console: %s\n", url)
			if browser {
				return openBrowser(url)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&address, "address", ui.DefaultAddress, "host:port the console listens on")
	cmd.Flags().BoolVar(&browser, "browser", false, "open the console in a browser (xdg-open)")
	cmd.Flags().IntVar(&synthetic, "synthetic", 0, "serve a console on --address showing a made-up mesh of N services and 4N edges (for front-end work)")
	_ = cmd.Flags().MarkHidden("synthetic")
	return cmd
}

func consoleURL(address string) (string, error) {
	if strings.Contains(address, "://") {
		return "", fmt.Errorf("--address %q: want host:port, not a URL", address)
	}
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return "", fmt.Errorf("--address %q: %w", address, err)
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port) + "/", nil
}

// checkConsole asks the console's API something cheap, so that another
// server on the port is not taken for it.
func checkConsole(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"api/validation", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("no console answers at %s (is `trellis up` running, or the control plane started with --ui-address?): %w", url, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		return fmt.Errorf("%s answers, but not as the Trellis console (GET /api/validation: %s)", url, resp.Status)
	}
	return nil
}

func openBrowser(url string) error {
	path, err := exec.LookPath("xdg-open")
	if err != nil {
		return fmt.Errorf("--browser: xdg-open not found; open %s yourself", url)
	}
	// xdg-open hands the URL to the browser and exits.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, path, url).CombinedOutput(); err != nil {
		return fmt.Errorf("--browser: xdg-open %s: %v %s", url, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// serveSynthetic serves a console over ui.SyntheticTopology until Ctrl-C.
func serveSynthetic(cmd *cobra.Command, address string, services int) error {
	lis, err := net.Listen("tcp", address)
	if err != nil {
		return fmt.Errorf("--synthetic: %w", err)
	}
	url, err := consoleURL(lis.Addr().String())
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: ui.New(ui.SyntheticTopology(services, 4*services, 1).Options()), ReadHeaderTimeout: 10 * time.Second}
	fmt.Fprintf(cmd.OutOrStdout(), "Synthetic console (%d services, %d edges): %s\nPress Ctrl-C to stop.\n", services, 4*services, url)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(lis) }()
	select {
	case err := <-done:
		return err
	case <-cmd.Context().Done():
		_ = srv.Close()
		<-done
		return nil
	}
}
