package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/spf13/cobra"
)

// DefaultWaitURL is the readiness endpoint `trellis-proxy wait` polls: the health port 15021.
const DefaultWaitURL = "http://localhost:15021/healthz/ready"

// newWaitCommand is Istio's `pilot-agent wait`: the sidecar container's postStart hook, so that
// Kubernetes starts the app container only once the proxy can carry its traffic.
func newWaitCommand() *cobra.Command {
	var (
		url                     string
		timeout, period, perReq time.Duration
	)
	cmd := &cobra.Command{
		Use:   "wait",
		Short: "Wait until the proxy is ready (polls its /healthz/ready); exits non-zero on timeout",
		Long: `Polls the proxy's readiness endpoint until it answers 200 or the timeout passes, as Istio's
'pilot-agent wait'. Injection runs it as the proxy container's postStart hook:
  lifecycle: {postStart: {exec: {command: [trellis-proxy, wait]}}}`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := context.WithTimeout(cmd.Context(), timeout)
			defer stop()
			start := time.Now()
			err := pollReady(ctx, url, period, perReq)
			if err != nil {
				return fail(fmt.Errorf("proxy not ready after %v: %w", time.Since(start).Round(time.Millisecond), err))
			}
			fmt.Fprintf(os.Stderr, "trellis-proxy: ready after %v\n", time.Since(start).Round(time.Millisecond))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&url, "url", DefaultWaitURL, "readiness URL to poll")
	f.DurationVar(&timeout, "timeout", 60*time.Second, "give up (exit 1) after this long")
	f.DurationVar(&period, "period", 500*time.Millisecond, "time between polls")
	f.DurationVar(&perReq, "request-timeout", 500*time.Millisecond, "timeout of one poll")
	return cmd
}

// pollReady polls url until it answers 200 or ctx ends; the error then says what it last saw.
func pollReady(ctx context.Context, url string, period, perReq time.Duration) error {
	client := &http.Client{Timeout: perReq}
	defer client.CloseIdleConnections()
	var last error
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err // a malformed --url will not get better
		}
		resp, err := client.Do(req)
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Errorf("%s answered %d %q", url, resp.StatusCode, body)
		} else {
			last = err
		}
		t := time.NewTimer(period)
		select {
		case <-ctx.Done():
			t.Stop()
			return last
		case <-t.C:
		}
	}
}
