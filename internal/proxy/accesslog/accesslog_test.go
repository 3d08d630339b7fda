package accesslog

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	filev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	streamv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/trellis-mesh/trellis/internal/proxy/streaminfo"
)

// IstioDefaultFormat is Istio's default proxy access log format (meshConfig.accessLogFormat unset).
const IstioDefaultFormat = `[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" ` +
	`%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% ` +
	`"%UPSTREAM_TRANSPORT_FAILURE_REASON%" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% ` +
	`%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" "%REQ(X-REQUEST-ID)%" ` +
	`"%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER_RAW% %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% ` +
	`%DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%` + "\n"

// fixedInfo is one finished request with every field the formats read.
func fixedInfo() *streaminfo.Info {
	return &streaminfo.Info{
		Start:     time.Date(2026, 11, 23, 9, 8, 7, 654321000, time.UTC),
		Duration:  12*time.Millisecond + 900*time.Microsecond,
		Protocol:  "HTTP/1.1",
		Method:    "GET",
		Path:      "/reviews/0?x=1",
		Authority: "reviews:9080",
		RequestHeaders: http.Header{
			"User-Agent":   {"curl/8.5.0"},
			"X-Request-Id": {"6b1e5a2c-0000-4000-8000-000000000001"},
		},
		ResponseHeaders:      http.Header{"X-Envoy-Upstream-Service-Time": {"11"}, "Content-Type": {"text/plain"}},
		DownstreamRemoteAddr: "127.0.0.1:53412",
		DownstreamLocalAddr:  "127.0.0.1:15001",
		RouteName:            "reviews-v1",
		UpstreamCluster:      "outbound|9080|v1|reviews.default.svc.cluster.local",
		UpstreamHost:         "127.0.1.4:9080",
		Attempts:             1,
		ResponseCode:         200,
		ResponseCodeDetails:  "via_upstream",
		BytesReceived:        0,
		BytesSent:            295,
	}
}

func textLogger(t testing.TB, format string) *logger {
	t.Helper()
	l := &logger{}
	if err := l.setText(format, false, "format"); err != nil {
		t.Fatal(err)
	}
	return l
}

func render(l *logger, info *streaminfo.Info) string {
	return string(l.appendLine(nil, &lineBuf{}, info))
}

func TestIstioDefaultFormatRendersLikeEnvoy(t *testing.T) {
	got := render(textLogger(t, IstioDefaultFormat), fixedInfo())
	want := `[2026-11-23T09:08:07.654Z] "GET /reviews/0?x=1 HTTP/1.1" 200 - via_upstream - "-" 0 295 12 11 "-" "curl/8.5.0" ` +
		`"6b1e5a2c-0000-4000-8000-000000000001" "reviews:9080" "127.0.1.4:9080" outbound|9080|v1|reviews.default.svc.cluster.local ` +
		`- 127.0.0.1:15001 127.0.0.1:53412 - reviews-v1` + "\n"
	if got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
}

func TestEnvoyDefaultFormatForALocalReply(t *testing.T) {
	info := fixedInfo()
	info.ResponseCode, info.ResponseCodeDetails = 503, "no_healthy_upstream"
	info.Flags = streaminfo.NoHealthyUpstream
	info.UpstreamHost, info.ResponseHeaders = "", nil
	info.RequestHeaders.Set("X-Envoy-Original-Path", "/orig")
	got := render(textLogger(t, DefaultFormat), info)
	want := `[2026-11-23T09:08:07.654Z] "GET /orig HTTP/1.1" 503 UH 0 295 12 - "-" "curl/8.5.0" "6b1e5a2c-0000-4000-8000-000000000001" "reviews:9080" "-"` + "\n"
	if got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
}

func TestCommandOperatorDetails(t *testing.T) {
	info := fixedInfo()
	info.Flags = streaminfo.UpstreamConnectionFailure | streaminfo.UpstreamRetryLimitExceeded
	info.ServerName = "reviews.example"
	info.DownstreamRemoteAddr = "[2001:db8::1]:4433"
	tests := []struct{ format, want string }{
		{"%REQ(USER-AGENT):4%", "curl"},
		{"%REQ(user-agent)%", "curl/8.5.0"},
		{"%REQUEST_HEADER(:METHOD)% %REQ(:SCHEME)% %REQ(HOST)%", "GET https reviews:9080"},
		{"%REQ(X-MISSING?USER-AGENT)%", "curl/8.5.0"},
		{"%REQ(X-MISSING)%|%RESP(X-MISSING)%|%TRAILER(GRPC-STATUS)%", "-|-|-"},
		{"%RESP(content-type)% %RESPONSE_HEADER(X-ENVOY-UPSTREAM-SERVICE-TIME)%", "text/plain 11"},
		{"%RESPONSE_FLAGS%", "UF,URX"},
		{"%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% %DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT%", "2001:db8::1 127.0.0.1"},
		{"%REQUESTED_SERVER_NAME% %UPSTREAM_REQUEST_ATTEMPT_COUNT%", "reviews.example 1"},
		{"100%% %PROTOCOL%", "100% HTTP/1.1"},
		{"%START_TIME(%Y-%m-%dT%H:%M:%S.%3fZ)%", "2026-11-23T09:08:07.654Z"},
		{"%START_TIME(%s.%6f|%E3S|%b %e %a %j)%", "1795424887.654321|07.654|Nov 23 Mon 327"},
		{"%START_TIME(%F %T %z)%", "2026-11-23 09:08:07 +0000"},
		{"%DURATION%ms", "12ms"},
		{"", ""},
	}
	for _, tt := range tests {
		if got := render(textLogger(t, tt.format), info); got != tt.want {
			t.Errorf("%q: got %q, want %q", tt.format, got, tt.want)
		}
	}
}

func TestOmitEmptyValuesPrintsNothingForMissing(t *testing.T) {
	l := &logger{}
	if err := l.setText("[%UPSTREAM_HOST%]", true, "f"); err != nil {
		t.Fatal(err)
	}
	if got := render(l, &streaminfo.Info{}); got != "[]" {
		t.Fatalf("got %q", got)
	}
}

func jsonStruct(t testing.TB, m map[string]any) *structpb.Struct {
	t.Helper()
	s, err := structpb.NewStruct(m)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// istioJSON is Istio's JSON access log format (accessLogEncoding: JSON).
var istioJSON = map[string]any{
	"authority": "%REQ(:AUTHORITY)%", "bytes_received": "%BYTES_RECEIVED%", "bytes_sent": "%BYTES_SENT%",
	"connection_termination_details": "%CONNECTION_TERMINATION_DETAILS%",
	"downstream_local_address":       "%DOWNSTREAM_LOCAL_ADDRESS%", "downstream_remote_address": "%DOWNSTREAM_REMOTE_ADDRESS%",
	"duration": "%DURATION%", "method": "%REQ(:METHOD)%", "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
	"protocol": "%PROTOCOL%", "request_id": "%REQ(X-REQUEST-ID)%", "requested_server_name": "%REQUESTED_SERVER_NAME%",
	"response_code": "%RESPONSE_CODE%", "response_code_details": "%RESPONSE_CODE_DETAILS%", "response_flags": "%RESPONSE_FLAGS%",
	"route_name": "%ROUTE_NAME%", "start_time": "%START_TIME%", "upstream_cluster": "%UPSTREAM_CLUSTER%",
	"upstream_host": "%UPSTREAM_HOST%", "upstream_local_address": "%UPSTREAM_LOCAL_ADDRESS%",
	"upstream_service_time":             "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
	"upstream_transport_failure_reason": "%UPSTREAM_TRANSPORT_FAILURE_REASON%",
	"user_agent":                        "%REQ(USER-AGENT)%", "x_forwarded_for": "%REQ(X-FORWARDED-FOR)%",
}

func TestTypedJSONFormatGolden(t *testing.T) {
	j, err := compileJSON(jsonStruct(t, istioJSON), true, false, "json_format")
	if err != nil {
		t.Fatal(err)
	}
	l := &logger{json: j}
	got := render(l, fixedInfo())
	golden := filepath.Join("testdata", "istio_json.golden")
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
	var parsed map[string]any
	if err := json.Unmarshal([]byte(got), &parsed); err != nil {
		t.Fatal(err)
	}
	if parsed["response_code"] != float64(200) || parsed["duration"] != float64(12) || parsed["upstream_local_address"] != nil ||
		parsed["upstream_service_time"] != "11" {
		t.Fatalf("typed values: %v", parsed)
	}
}

func TestUntypedJSONAndMixedTemplatesAreStrings(t *testing.T) {
	format := jsonStruct(t, map[string]any{
		"code": "%RESPONSE_CODE%", "line": "%REQ(:METHOD)% %REQ(:PATH)% \"q\"", "missing": "%UPSTREAM_LOCAL_ADDRESS%",
		"const": 2.5, "on": true, "nested": map[string]any{"host": "%UPSTREAM_HOST%"}, "list": []any{"a", "%PROTOCOL%"},
	})
	j, err := compileJSON(format, false, false, "json_format")
	if err != nil {
		t.Fatal(err)
	}
	got := render(&logger{json: j}, fixedInfo())
	want := `{"code":"200","const":2.5,"line":"GET /reviews/0?x=1 \"q\"","list":["a","HTTP/1.1"],"missing":"-","nested":{"host":"127.0.1.4:9080"},"on":true}` + "\n"
	if got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
	// typed with omit_empty_values drops missing keys and emptied objects.
	j, _ = compileJSON(jsonStruct(t, map[string]any{"a": "%UPSTREAM_LOCAL_ADDRESS%", "n": map[string]any{"b": "%ROUTE_NAME%"}, "c": "%RESPONSE_CODE%"}), true, true, "f")
	if got := render(&logger{json: j}, &streaminfo.Info{}); got != `{"c":0}`+"\n" {
		t.Fatalf("omit empty: %q", got)
	}
}

func anyOf(t testing.TB, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func statusFilter(op accesslogv3.ComparisonFilter_Op, v uint32) *accesslogv3.AccessLogFilter {
	return &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_StatusCodeFilter{StatusCodeFilter: &accesslogv3.StatusCodeFilter{
		Comparison: &accesslogv3.ComparisonFilter{Op: op, Value: &corev3.RuntimeUInt32{DefaultValue: v, RuntimeKey: "k"}}}}}
}

func TestFiltersDecideWhatIsLogged(t *testing.T) {
	durationGE := &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_DurationFilter{DurationFilter: &accesslogv3.DurationFilter{
		Comparison: &accesslogv3.ComparisonFilter{Op: accesslogv3.ComparisonFilter_GE, Value: &corev3.RuntimeUInt32{DefaultValue: 100, RuntimeKey: "d"}}}}}
	flags := func(names ...string) *accesslogv3.AccessLogFilter {
		return &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_ResponseFlagFilter{ResponseFlagFilter: &accesslogv3.ResponseFlagFilter{Flags: names}}}
	}
	or := func(fs ...*accesslogv3.AccessLogFilter) *accesslogv3.AccessLogFilter {
		return &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_OrFilter{OrFilter: &accesslogv3.OrFilter{Filters: fs}}}
	}
	and := func(fs ...*accesslogv3.AccessLogFilter) *accesslogv3.AccessLogFilter {
		return &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_AndFilter{AndFilter: &accesslogv3.AndFilter{Filters: fs}}}
	}
	notHC := &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_NotHealthCheckFilter{NotHealthCheckFilter: &accesslogv3.NotHealthCheckFilter{}}}
	ok := func(code int, d time.Duration, f streaminfo.Flags) *streaminfo.Info {
		return &streaminfo.Info{ResponseCode: code, Duration: d, Flags: f}
	}
	tests := []struct {
		name string
		f    *accesslogv3.AccessLogFilter
		in   []*streaminfo.Info
		out  []*streaminfo.Info
	}{
		{"status >= 500", statusFilter(accesslogv3.ComparisonFilter_GE, 500), []*streaminfo.Info{ok(503, 0, 0), ok(500, 0, 0)}, []*streaminfo.Info{ok(200, 0, 0), ok(404, 0, 0)}},
		{"status == 0 for no response", statusFilter(accesslogv3.ComparisonFilter_EQ, 0), []*streaminfo.Info{ok(0, 0, 0)}, []*streaminfo.Info{ok(200, 0, 0)}},
		{"status <= 299", statusFilter(accesslogv3.ComparisonFilter_LE, 299), []*streaminfo.Info{ok(200, 0, 0)}, []*streaminfo.Info{ok(300, 0, 0)}},
		{"status != 200", statusFilter(accesslogv3.ComparisonFilter_NE, 200), []*streaminfo.Info{ok(201, 0, 0)}, []*streaminfo.Info{ok(200, 0, 0)}},
		{"duration >= 100ms", durationGE, []*streaminfo.Info{ok(200, 100*time.Millisecond, 0)}, []*streaminfo.Info{ok(200, 99*time.Millisecond+999*time.Microsecond, 0)}},
		{"any flag", flags(), []*streaminfo.Info{ok(503, 0, streaminfo.NoHealthyUpstream)}, []*streaminfo.Info{ok(200, 0, 0)}},
		{"flag UH or UF", flags("UF", "UH"), []*streaminfo.Info{ok(503, 0, streaminfo.NoHealthyUpstream)}, []*streaminfo.Info{ok(504, 0, streaminfo.UpstreamRequestTimeout)}},
		{"or", or(statusFilter(accesslogv3.ComparisonFilter_GE, 500), durationGE), []*streaminfo.Info{ok(500, 0, 0), ok(200, time.Second, 0)}, []*streaminfo.Info{ok(200, 0, 0)}},
		{"and", and(statusFilter(accesslogv3.ComparisonFilter_GE, 500), notHC), []*streaminfo.Info{ok(500, 0, 0)}, []*streaminfo.Info{ok(200, 0, 0)}},
	}
	for _, tt := range tests {
		f, err := parseFilter(tt.f, "filter")
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		for _, i := range tt.in {
			if !f(i) {
				t.Errorf("%s: %+v not logged", tt.name, *i)
			}
		}
		for _, i := range tt.out {
			if f(i) {
				t.Errorf("%s: %+v logged", tt.name, *i)
			}
		}
	}
}

func TestParseRejectsWhatItCannotHonourWithFieldPaths(t *testing.T) {
	files := NewFiles(&bytes.Buffer{}, &bytes.Buffer{})
	t.Cleanup(func() { _ = files.Close() })
	stdout := func(lf *corev3.SubstitutionFormatString) *anypb.Any {
		return anyOf(t, &streamv3.StdoutAccessLog{AccessLogFormat: &streamv3.StdoutAccessLog_LogFormat{LogFormat: lf}})
	}
	text := func(s string) *corev3.SubstitutionFormatString {
		return &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_TextFormatSource{TextFormatSource: &corev3.DataSource{
			Specifier: &corev3.DataSource_InlineString{InlineString: s}}}}
	}
	tests := []struct {
		name string
		al   *accesslogv3.AccessLog
		want string
		unsu bool
	}{
		{"unknown operator", &accesslogv3.AccessLog{Name: "x", ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: stdout(text("%DYNAMIC_METADATA(istio)% %FOO_BAR%"))}},
			"typed_config.log_format.text_format_source.inline_string: command operator %DYNAMIC_METADATA%", true},
		{"bad syntax", &accesslogv3.AccessLog{ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: stdout(text("50% done"))}},
			"no valid command operator at position 2", false},
		{"operator with a stray argument", &accesslogv3.AccessLog{ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: stdout(text("%PROTOCOL(x)%"))}},
			"takes no argument", false},
		{"REQ without a header", &accesslogv3.AccessLog{ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: stdout(text("%REQ%"))}},
			"a header name is required", false},
		{"file data source", &accesslogv3.AccessLog{ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: stdout(&corev3.SubstitutionFormatString{
			Format: &corev3.SubstitutionFormatString_TextFormatSource{TextFormatSource: &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: "/f"}}}})}},
			"typed_config.log_format.text_format_source: only inline_string", true},
		{"unknown logger", &accesslogv3.AccessLog{ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: anyOf(t, &accesslogv3.AccessLog{})}},
			`typed_config: access logger "type.googleapis.com/envoy.config.accesslog.v3.AccessLog"`, true},
		{"header filter", &accesslogv3.AccessLog{Filter: &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_OrFilter{OrFilter: &accesslogv3.OrFilter{
			Filters: []*accesslogv3.AccessLogFilter{statusFilter(accesslogv3.ComparisonFilter_GE, 500), {FilterSpecifier: &accesslogv3.AccessLogFilter_HeaderFilter{HeaderFilter: &accesslogv3.HeaderFilter{Header: &routev3.HeaderMatcher{Name: "x-debug"}}}}}}}},
			ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: stdout(nil)}},
			"filter.or_filter.filters[1].header_filter", true},
		{"bad flag", &accesslogv3.AccessLog{Filter: &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_ResponseFlagFilter{ResponseFlagFilter: &accesslogv3.ResponseFlagFilter{Flags: []string{"UH", "XX"}}}},
			ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: stdout(nil)}}, "", false},
	}
	for _, tt := range tests {
		_, err := files.Parse(tt.al)
		if err == nil {
			t.Errorf("%s: accepted", tt.name)
			continue
		}
		if !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error %q lacks %q", tt.name, err, tt.want)
		}
		if tt.unsu && !errors.Is(err, ErrUnsupported) {
			t.Errorf("%s: error %q is not ErrUnsupported", tt.name, err)
		}
	}
}

func TestFileLoggersShareOneBufferedFileAndFlushOnClose(t *testing.T) {
	files := NewFiles(nil, nil)
	path := filepath.Join(t.TempDir(), "access.log")
	text := &accesslogv3.AccessLog{Name: "text", ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: anyOf(t, &filev3.FileAccessLog{
		//lint:ignore SA1019 the deprecated formats are still accepted, so they are tested.
		Path: path, AccessLogFormat: &filev3.FileAccessLog_Format{Format: "%RESPONSE_CODE% %REQ(:PATH)%\n"}})}}
	typed := &accesslogv3.AccessLog{Name: "json", Filter: statusFilter(accesslogv3.ComparisonFilter_GE, 500),
		ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: anyOf(t, &filev3.FileAccessLog{
			//lint:ignore SA1019 the deprecated formats are still accepted, so they are tested.
			Path: path, AccessLogFormat: &filev3.FileAccessLog_TypedJsonFormat{TypedJsonFormat: jsonStruct(t, map[string]any{"code": "%RESPONSE_CODE%"})}})}}
	a, err := files.Parse(text)
	if err != nil {
		t.Fatal(err)
	}
	b, err := files.Parse(typed)
	if err != nil {
		t.Fatal(err)
	}
	if a.(*logger).sink != b.(*logger).sink {
		t.Fatal("two loggers of one path do not share its writer")
	}
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() {
			info := &streaminfo.Info{ResponseCode: 200, Path: "/ok"}
			if i%10 == 0 {
				info.ResponseCode = 503
			}
			a.Log(info)
			b.Log(info)
		})
	}
	wg.Wait()
	if err := files.Close(); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	var ok, failed, js int
	for _, l := range lines {
		switch l {
		case "200 /ok":
			ok++
		case "503 /ok":
			failed++
		case `{"code":503}`:
			js++
		default:
			t.Errorf("unexpected line %q", l)
		}
	}
	if ok != 45 || failed != 5 || js != 5 {
		t.Fatalf("got %d ok, %d failed, %d json lines:\n%s", ok, failed, js, data)
	}
}

func TestStdoutLoggerDefaultsToEnvoysFormatAndFlushesWithinASecond(t *testing.T) {
	out := &lockedBuffer{}
	files := NewFiles(out, nil)
	t.Cleanup(func() { _ = files.Close() })
	l, err := files.Parse(&accesslogv3.AccessLog{ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: anyOf(t, &streamv3.StdoutAccessLog{})}})
	if err != nil {
		t.Fatal(err)
	}
	l.Log(fixedInfo())
	deadline := time.Now().Add(10 * time.Second)
	for out.String() == "" && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if want := `[2026-11-23T09:08:07.654Z] "GET /reviews/0?x=1 HTTP/1.1" 200 - 0 295 12 11 "-" "curl/8.5.0"`; !strings.HasPrefix(out.String(), want) {
		t.Fatalf("stdout got %q, want prefix %q", out.String(), want)
	}
}

func TestParsingTouchesNoFileAndAnUnopenablePathDropsLines(t *testing.T) {
	files := NewFiles(nil, nil)
	t.Cleanup(func() { _ = files.Close() })
	dir := t.TempDir()
	path := filepath.Join(dir, "later.log")
	bad := filepath.Join(dir, "no", "such", "dir", "a.log")
	good, err := files.Parse(&accesslogv3.AccessLog{ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: anyOf(t, &filev3.FileAccessLog{Path: path})}})
	if err != nil {
		t.Fatal(err)
	}
	broken, err := files.Parse(&accesslogv3.AccessLog{ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: anyOf(t, &filev3.FileAccessLog{Path: bad})}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("Parse created the file (stat: %v)", err)
	}
	good.Log(fixedInfo())
	broken.Log(fixedInfo())
	if err := files.Flush(); err == nil || !strings.Contains(err.Error(), "open access log") {
		t.Fatalf("Flush: %v", err)
	}
	if files.Dropped() != 1 {
		t.Fatalf("dropped %d lines, want 1", files.Dropped())
	}
	if data, _ := os.ReadFile(path); !strings.HasPrefix(string(data), "[2026-11-23T09:08:07.654Z]") {
		t.Fatalf("good file: %q", data)
	}
}

func TestReopenStartsANewFileAfterRotation(t *testing.T) {
	files := NewFiles(nil, nil)
	t.Cleanup(func() { _ = files.Close() })
	path := filepath.Join(t.TempDir(), "a.log")
	l, err := files.Parse(&accesslogv3.AccessLog{ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: anyOf(t, &filev3.FileAccessLog{
		//lint:ignore SA1019 the deprecated formats are still accepted, so they are tested.
		Path: path, AccessLogFormat: &filev3.FileAccessLog_Format{Format: "%RESPONSE_CODE%\n"}})}})
	if err != nil {
		t.Fatal(err)
	}
	l.Log(&streaminfo.Info{ResponseCode: 200})
	if err := files.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	if err := files.Reopen(); err != nil {
		t.Fatal(err)
	}
	l.Log(&streaminfo.Info{ResponseCode: 404})
	if err := files.Flush(); err != nil {
		t.Fatal(err)
	}
	old, _ := os.ReadFile(path + ".1")
	cur, _ := os.ReadFile(path)
	if string(old) != "200\n" || string(cur) != "404\n" {
		t.Fatalf("rotated %q, current %q", old, cur)
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func BenchmarkFormatIstioDefault(b *testing.B) {
	l := textLogger(b, IstioDefaultFormat)
	info := fixedInfo()
	buf := make([]byte, 0, 1024)
	b.ReportAllocs()
	for b.Loop() {
		buf = appendText(buf[:0], l.text, info, false)
	}
}

func BenchmarkFormatIstioJSON(b *testing.B) {
	j, err := compileJSON(jsonStruct(b, istioJSON), true, false, "json_format")
	if err != nil {
		b.Fatal(err)
	}
	info := fixedInfo()
	buf, scratch := make([]byte, 0, 2048), make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		buf, scratch = j.append(buf[:0], scratch, info)
	}
}

func BenchmarkLogIstioDefault(b *testing.B) {
	files := NewFiles(discard{}, nil)
	b.Cleanup(func() { _ = files.Close() })
	l, err := files.Parse(&accesslogv3.AccessLog{ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: anyOf(b, &streamv3.StdoutAccessLog{
		AccessLogFormat: &streamv3.StdoutAccessLog_LogFormat{LogFormat: &corev3.SubstitutionFormatString{
			Format: &corev3.SubstitutionFormatString_TextFormatSource{TextFormatSource: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: IstioDefaultFormat}}}}}})}})
	if err != nil {
		b.Fatal(err)
	}
	info := fixedInfo()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			l.Log(info)
		}
	})
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
