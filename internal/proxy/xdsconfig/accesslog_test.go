package xdsconfig

import (
	"errors"
	"strings"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"

	"github.com/trellis-mesh/trellis/internal/proxy/accesslog"
)

func TestHCMAccessLogsAreParsed(t *testing.T) {
	l := fromYAML(t, &listenerv3.Listener{}, hcmHeader+`
      rds: {route_config_name: "15001", config_source: {ads: {}}}
      access_log:
      - name: envoy.access_loggers.stdout
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog
      - name: envoy.access_loggers.file
        filter: {status_code_filter: {comparison: {op: GE, value: {default_value: 500, runtime_key: k}}}}
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
          path: /dev/stdout
          log_format: {json_format: {code: "%RESPONSE_CODE%"}}
`+routerFilter)
	got, err := ParseListener(l)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.FilterChains[0].HTTP.AccessLogs) != 2 {
		t.Fatalf("got %d access loggers", len(got.FilterChains[0].HTTP.AccessLogs))
	}
}

func TestHCMAccessLogWithUnknownOperatorIsRejectedWithItsPath(t *testing.T) {
	l := fromYAML(t, &listenerv3.Listener{}, hcmHeader+`
      rds: {route_config_name: "15001", config_source: {ads: {}}}
      access_log:
      - name: envoy.access_loggers.stdout
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog
          log_format: {text_format_source: {inline_string: "%UPSTREAM_PEER_SUBJECT%\n"}}
`+routerFilter)
	_, err := ParseListener(l)
	want := `filter_chains[0].filters[0] (http_connection_manager).access_log[0]: typed_config.log_format.text_format_source.inline_string: command operator %UPSTREAM_PEER_SUBJECT%`
	if err == nil || !strings.Contains(err.Error(), want) || !errors.Is(err, accesslog.ErrUnsupported) {
		t.Fatalf("got %v, want it to contain %q", err, want)
	}
}
