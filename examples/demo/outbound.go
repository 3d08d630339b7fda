package demo

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
)

// propagatedHeaders are copied from an incoming request to the calls it
// causes, as bookinfo does: the mesh routes on end-user and stitches traces
// and access logs together with the rest. Apps must do this themselves;
// a proxy cannot tell which outbound call belongs to which inbound one.
var propagatedHeaders = []string{
	"end-user",
	"x-request-id",
	"traceparent",
	"tracestate",
	"b3",
	"x-b3-traceid",
	"x-b3-spanid",
	"x-b3-parentspanid",
	"x-b3-sampled",
	"x-b3-flags",
	"x-ot-span-context",
}

// maxErrorBody bounds how much of a failed upstream response is quoted in
// an error: enough for a proxy's "no healthy upstream" and the like.
const maxErrorBody = 512

// outbound makes an app's calls to other services.
type outbound struct {
	client *http.Client
	log    *slog.Logger
}

// getJSON GETs url with the propagated headers of in and decodes a 200
// response into v. Other statuses are errors quoting the body's start.
func (o *outbound) getJSON(ctx context.Context, url string, in http.Header, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("GET %s: %w", url, err)
	}
	for _, h := range propagatedHeaders {
		if vals := in.Values(h); len(vals) > 0 {
			req.Header[http.CanonicalHeaderKey(h)] = vals
		}
	}
	req.Header.Set("Accept", "application/json")
	resp, err := o.client.Do(req)
	if err != nil {
		return fmt.Errorf("GET %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		msg := strings.TrimSpace(string(body))
		if msg == "" {
			return fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, msg)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("GET %s: decode response: %w", url, err)
	}
	// Drain so the connection goes back to the pool.
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	return nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// errorJSON is the body of a demo service's error responses.
type errorJSON struct {
	Error string `json:"error"`
}
