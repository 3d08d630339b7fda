//lint:file-ignore SA1019 Envoy still honours the deprecated HeaderValueOption.append, so trellis-proxy must too.

package xdsconfig

import (
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"

	"github.com/trellis-mesh/trellis/internal/proxy/upstream"
)

// parseHealthCheck converts one health_checks entry: HTTP (HTTP/1.1 or cleartext HTTP/2) or TCP.
// gRPC and custom checkers, TLS options, alternate ports, event logging and HTTP payload matching
// are rejected; always_log_health_check_failures/success only concern event logs and are ignored.
func parseHealthCheck(h *corev3.HealthCheck) (upstream.HealthCheck, error) {
	var out upstream.HealthCheck
	if err := onlyFields(h, "timeout", "interval", "initial_jitter", "interval_jitter", "interval_jitter_percent",
		"unhealthy_threshold", "healthy_threshold", "reuse_connection", "http_health_check", "tcp_health_check",
		"grpc_health_check", "no_traffic_interval", "no_traffic_healthy_interval", "unhealthy_interval",
		"unhealthy_edge_interval", "healthy_edge_interval", "always_log_health_check_failures",
		"always_log_health_check_success"); err != nil {
		return out, err
	}
	if h.GetReuseConnection() != nil && !h.GetReuseConnection().GetValue() {
		return out, fmt.Errorf("reuse_connection: false is %w", ErrUnsupported)
	}
	out.Timeout = duration(h.GetTimeout(), 0)
	out.Interval = duration(h.GetInterval(), 0)
	if out.Timeout <= 0 || out.Interval <= 0 {
		return out, errors.New("timeout and interval must be greater than 0")
	}
	out.InitialJitter = duration(h.GetInitialJitter(), 0)
	out.IntervalJitter = duration(h.GetIntervalJitter(), 0)
	out.IntervalJitterPercent = h.GetIntervalJitterPercent()
	out.UnhealthyThreshold = max(h.GetUnhealthyThreshold().GetValue(), 1)
	out.HealthyThreshold = max(h.GetHealthyThreshold().GetValue(), 1)
	// Envoy's defaults: 60s without traffic, each edge interval defaulting to its steady one.
	out.NoTrafficInterval = duration(h.GetNoTrafficInterval(), upstream.DefaultNoTrafficInterval)
	out.NoTrafficHealthyInterval = duration(h.GetNoTrafficHealthyInterval(), out.NoTrafficInterval)
	out.UnhealthyInterval = duration(h.GetUnhealthyInterval(), out.Interval)
	out.UnhealthyEdgeInterval = duration(h.GetUnhealthyEdgeInterval(), out.UnhealthyInterval)
	out.HealthyEdgeInterval = duration(h.GetHealthyEdgeInterval(), out.Interval)
	switch c := h.GetHealthChecker().(type) {
	case *corev3.HealthCheck_HttpHealthCheck_:
		hh, err := httpHealthCheck(c.HttpHealthCheck)
		if err != nil {
			return out, fmt.Errorf("http_health_check.%w", err)
		}
		out.HTTP = hh
	case *corev3.HealthCheck_TcpHealthCheck_:
		t := c.TcpHealthCheck
		if err := onlyFields(t, "send", "receive"); err != nil {
			return out, fmt.Errorf("tcp_health_check.%w", err)
		}
		tc := &upstream.TCPHealthCheck{}
		if t.GetSend() != nil {
			b, err := payload(t.GetSend())
			if err != nil {
				return out, fmt.Errorf("tcp_health_check.send.%w", err)
			}
			tc.Send = b
		}
		for i, r := range t.GetReceive() {
			b, err := payload(r)
			if err != nil {
				return out, fmt.Errorf("tcp_health_check.receive[%d].%w", i, err)
			}
			tc.Receive = append(tc.Receive, b)
		}
		out.TCP = tc
	case *corev3.HealthCheck_GrpcHealthCheck_:
		return out, fmt.Errorf("grpc_health_check: %w", ErrUnsupported)
	default:
		return out, errors.New("health_checker: an http_health_check or tcp_health_check is required")
	}
	return out, nil
}

func httpHealthCheck(h *corev3.HealthCheck_HttpHealthCheck) (*upstream.HTTPHealthCheck, error) {
	if err := onlyFields(h, "host", "path", "request_headers_to_add", "request_headers_to_remove",
		"expected_statuses", "retriable_statuses", "codec_client_type", "method"); err != nil {
		return nil, err
	}
	out := &upstream.HTTPHealthCheck{Path: h.GetPath(), Host: h.GetHost(), RemoveHeaders: h.GetRequestHeadersToRemove()}
	switch h.GetCodecClientType() {
	case typev3.CodecClientType_HTTP1:
	case typev3.CodecClientType_HTTP2:
		out.HTTP2 = true
	default:
		return nil, fmt.Errorf("codec_client_type %s: %w", h.GetCodecClientType(), ErrUnsupported)
	}
	switch m := h.GetMethod(); m {
	case corev3.RequestMethod_METHOD_UNSPECIFIED:
	case corev3.RequestMethod_CONNECT:
		return nil, errors.New("method: CONNECT is not allowed")
	default:
		out.Method = m.String()
	}
	for i, hv := range h.GetRequestHeadersToAdd() {
		if err := onlyFields(hv, "header", "append", "append_action", "keep_empty_value"); err != nil {
			return nil, fmt.Errorf("request_headers_to_add[%d].%w", i, err)
		}
		name := http.CanonicalHeaderKey(hv.GetHeader().GetKey())
		if name == "" {
			return nil, fmt.Errorf("request_headers_to_add[%d].header.key is required", i)
		}
		appendIt := hv.GetAppendAction() == corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD
		if hv.GetAppend() != nil {
			appendIt = hv.GetAppend().GetValue()
		}
		if hv.GetAppendAction() > corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD {
			return nil, fmt.Errorf("request_headers_to_add[%d].append_action %s: %w", i, hv.GetAppendAction(), ErrUnsupported)
		}
		out.Headers = append(out.Headers, upstream.HealthCheckHeader{Name: name, Value: hv.GetHeader().GetValue(), Append: appendIt})
	}
	ranges := func(rs []*typev3.Int64Range, field string) ([]upstream.StatusRange, error) {
		var out []upstream.StatusRange
		for i, r := range rs {
			// Envoy requires the ranges to lie within 100..600.
			if r.GetStart() < 100 || r.GetEnd() > 600 || r.GetStart() >= r.GetEnd() {
				return nil, fmt.Errorf("%s[%d]: [%d, %d) is not a range of HTTP statuses", field, i, r.GetStart(), r.GetEnd())
			}
			out = append(out, upstream.StatusRange{Start: int(r.GetStart()), End: int(r.GetEnd())})
		}
		return out, nil
	}
	var err error
	if out.Expected, err = ranges(h.GetExpectedStatuses(), "expected_statuses"); err != nil {
		return nil, err
	}
	if out.Retriable, err = ranges(h.GetRetriableStatuses(), "retriable_statuses"); err != nil {
		return nil, err
	}
	return out, nil
}

func payload(p *corev3.HealthCheck_Payload) ([]byte, error) {
	switch v := p.GetPayload().(type) {
	case *corev3.HealthCheck_Payload_Text:
		b, err := hex.DecodeString(v.Text)
		if err != nil {
			return nil, fmt.Errorf("text: not hex: %w", err)
		}
		return b, nil
	case *corev3.HealthCheck_Payload_Binary:
		return v.Binary, nil
	}
	return nil, errors.New("payload is required")
}
