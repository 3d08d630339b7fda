package accesslog

import (
	"fmt"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"

	"github.com/trellis-mesh/trellis/internal/proxy/streaminfo"
)

// filter decides whether a request is logged.
type filter func(*streaminfo.Info) bool

// parseFilter converts an AccessLogFilter. Filters on things trellis-proxy does not track (runtime,
// tracing, headers, gRPC status, metadata, log type, extensions) are rejected rather than ignored.
func parseFilter(f *accesslogv3.AccessLogFilter, field string) (filter, error) {
	switch s := f.GetFilterSpecifier().(type) {
	case *accesslogv3.AccessLogFilter_StatusCodeFilter:
		cmp, err := comparison(s.StatusCodeFilter.GetComparison(), field+".status_code_filter.comparison")
		if err != nil {
			return nil, err
		}
		// Envoy compares 0 when no response was sent.
		return func(i *streaminfo.Info) bool { return cmp(uint64(max(i.ResponseCode, 0))) }, nil
	case *accesslogv3.AccessLogFilter_DurationFilter:
		cmp, err := comparison(s.DurationFilter.GetComparison(), field+".duration_filter.comparison")
		if err != nil {
			return nil, err
		}
		return func(i *streaminfo.Info) bool { return cmp(uint64(max(i.Duration.Milliseconds(), 0))) }, nil
	case *accesslogv3.AccessLogFilter_NotHealthCheckFilter:
		// trellis-proxy has no health check filter, so no request is one: every request passes.
		return func(*streaminfo.Info) bool { return true }, nil
	case *accesslogv3.AccessLogFilter_ResponseFlagFilter:
		var want streaminfo.Flags
		for i, name := range s.ResponseFlagFilter.GetFlags() {
			f, ok := streaminfo.ParseFlag(name)
			if !ok {
				return nil, fmt.Errorf("%s.response_flag_filter.flags[%d]: unknown response flag %q", field, i, name)
			}
			want |= f
		}
		if want == 0 { // no flags listed: any flag
			return func(i *streaminfo.Info) bool { return i.Flags != 0 }, nil
		}
		return func(i *streaminfo.Info) bool { return i.Flags&want != 0 }, nil
	case *accesslogv3.AccessLogFilter_AndFilter:
		subs, err := parseFilters(s.AndFilter.GetFilters(), field+".and_filter.filters")
		if err != nil {
			return nil, err
		}
		return func(i *streaminfo.Info) bool {
			for _, f := range subs {
				if !f(i) {
					return false
				}
			}
			return true
		}, nil
	case *accesslogv3.AccessLogFilter_OrFilter:
		subs, err := parseFilters(s.OrFilter.GetFilters(), field+".or_filter.filters")
		if err != nil {
			return nil, err
		}
		return func(i *streaminfo.Info) bool {
			for _, f := range subs {
				if f(i) {
					return true
				}
			}
			return false
		}, nil
	case nil:
		return nil, fmt.Errorf("%s: a filter must be set", field)
	default:
		name := f.ProtoReflect().WhichOneof(f.ProtoReflect().Descriptor().Oneofs().ByName("filter_specifier")).Name()
		return nil, fmt.Errorf("%s.%s: %w", field, name, ErrUnsupported)
	}
}

func parseFilters(fs []*accesslogv3.AccessLogFilter, field string) ([]filter, error) {
	out := make([]filter, 0, len(fs))
	for i, f := range fs {
		p, err := parseFilter(f, fmt.Sprintf("%s[%d]", field, i))
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// comparison is Envoy's ComparisonFilter. The runtime key is accepted; trellis-proxy has no runtime,
// so the default value always applies, as in an Envoy whose runtime does not set the key.
func comparison(c *accesslogv3.ComparisonFilter, field string) (func(uint64) bool, error) {
	v := uint64(c.GetValue().GetDefaultValue())
	switch c.GetOp() {
	case accesslogv3.ComparisonFilter_EQ:
		return func(x uint64) bool { return x == v }, nil
	case accesslogv3.ComparisonFilter_GE:
		return func(x uint64) bool { return x >= v }, nil
	case accesslogv3.ComparisonFilter_LE:
		return func(x uint64) bool { return x <= v }, nil
	case accesslogv3.ComparisonFilter_NE:
		return func(x uint64) bool { return x != v }, nil
	}
	return nil, fmt.Errorf("%s.op %s: %w", field, c.GetOp(), ErrUnsupported)
}
