package xdsconfig

import (
	"fmt"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"

	"github.com/trellis-mesh/trellis/internal/proxy/accesslog"
)

// parseAccessLogs converts an access_log list (HCM's) into loggers. A logger trellis-proxy cannot
// honour fails the whole resource, with its index in the field path.
func parseAccessLogs(logs []*accesslogv3.AccessLog) ([]accesslog.Logger, error) {
	var out []accesslog.Logger
	for i, al := range logs {
		l, err := accesslog.Parse(al)
		if err != nil {
			return nil, fmt.Errorf("access_log[%d]: %w", i, err)
		}
		out = append(out, l)
	}
	return out, nil
}
