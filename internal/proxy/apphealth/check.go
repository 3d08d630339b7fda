package apphealth

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// userAgent is the agent's: applications that single out probes by User-Agent see the same one
// behind trellis-proxy as behind Istio.
const userAgent = "istio-probe/1.0"

// maxExecOutput bounds the command output kept for the unhealthy message: it travels to the
// control plane and into the WorkloadEntry's status.
const maxExecOutput = 1024

// checker runs one check of a defaulted probe; nil means healthy.
type checker struct {
	probe Probe
	http  *http.Client
}

func newChecker(p Probe) *checker {
	c := &checker{probe: p}
	if h := p.HTTPGet; h != nil {
		// Not http.DefaultTransport: no $HTTP_PROXY for a check of the local app, and no idle
		// connections kept between checks seconds apart.
		tr := &http.Transport{DisableKeepAlives: true}
		if h.Scheme == "https" {
			// As the kubelet and Istio's agent: a probe checks that the app answers, not who it is.
			tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // see above
		}
		c.http = &http.Client{Transport: tr}
	}
	return c
}

// check runs the probe's method; ctx carries the probe's timeout.
func (c *checker) check(ctx context.Context) error {
	switch p := c.probe; {
	case p.HTTPGet != nil:
		return c.checkHTTP(ctx, p.HTTPGet)
	case p.TCPSocket != nil:
		return checkTCP(ctx, p.TCPSocket)
	case p.Exec != nil:
		return checkExec(ctx, p.Exec)
	case p.GRPC != nil:
		return checkGRPC(ctx, p.GRPC)
	}
	return errors.New("probe has no check method") // Validate rules this out
}

func (c *checker) checkHTTP(ctx context.Context, h *HTTPGet) error {
	target, err := url.Parse(h.Path)
	if err != nil { // Validate rules this out; kept as the agent does
		target = &url.URL{Path: h.Path}
	}
	target.Scheme = h.Scheme
	target.Host = net.JoinHostPort(h.Host, strconv.Itoa(h.Port))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target.String(), nil)
	if err != nil {
		return fmt.Errorf("HTTP GET %s: %w", target, err)
	}
	for _, hd := range h.HTTPHeaders {
		req.Header.Add(hd.Name, hd.Value)
	}
	if host := req.Header.Get("Host"); host != "" {
		req.Host = host
	}
	if _, ok := req.Header["User-Agent"]; !ok {
		req.Header.Set("User-Agent", userAgent)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("HTTP GET %s: no response within %ds", target, c.probe.TimeoutSeconds)
		}
		return err // already "Get "http://...": dial tcp ...: connection refused"
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	resp.Body.Close()
	// Kubernetes' rule: any 2xx or 3xx is healthy.
	if resp.StatusCode < http.StatusOK || resp.StatusCode >= http.StatusBadRequest {
		return fmt.Errorf("HTTP GET %s: status %d, want 200-399", target, resp.StatusCode)
	}
	return nil
}

func checkTCP(ctx context.Context, t *TCPSocket) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(t.Host, strconv.Itoa(t.Port)))
	if err != nil {
		return fmt.Errorf("TCP connect: %w", err)
	}
	return conn.Close()
}

func checkExec(ctx context.Context, e *Exec) error {
	cmd := exec.CommandContext(ctx, e.Command[0], e.Command[1:]...)
	var out limitedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	// A command that leaves children holding its output open must not hold the check past the
	// timeout; on Unix the whole process group is killed.
	cmd.WaitDelay = time.Second
	killProcessGroup(cmd)
	err := cmd.Run()
	if err == nil {
		return nil
	}
	msg := fmt.Sprintf("exec %q", e.Command)
	if ctx.Err() != nil {
		msg += " timed out"
	} else {
		msg += ": " + err.Error()
	}
	if s := strings.TrimSpace(out.String()); s != "" {
		msg += ": " + s
	}
	return errors.New(msg)
}

func checkGRPC(ctx context.Context, g *GRPC) error {
	addr := net.JoinHostPort(DefaultHost, strconv.Itoa(g.Port))
	conn, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithUserAgent(userAgent))
	if err != nil {
		return fmt.Errorf("gRPC health check on port %d: %w", g.Port, err)
	}
	defer conn.Close()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: g.Service})
	if err != nil {
		switch status.Code(err) {
		case codes.Unimplemented:
			return fmt.Errorf("gRPC health check on port %d: the server does not implement grpc.health.v1.Health", g.Port)
		case codes.DeadlineExceeded:
			return fmt.Errorf("gRPC health check on port %d: no answer in time: %w", g.Port, err)
		}
		return fmt.Errorf("gRPC health check on port %d: %w", g.Port, err)
	}
	if st := resp.GetStatus(); st != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("gRPC health check on port %d: service %q is %s", g.Port, g.Service, st)
	}
	return nil
}

// limitedBuffer keeps the first maxExecOutput bytes written to it and drops the rest, so a chatty
// command cannot grow the proxy's memory. The buffer is a field, not embedded: an embedded
// bytes.Buffer's ReadFrom would let io.Copy bypass Write.
type limitedBuffer struct{ buf bytes.Buffer }

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := maxExecOutput - b.buf.Len(); room > 0 {
		b.buf.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (b *limitedBuffer) String() string { return b.buf.String() }
