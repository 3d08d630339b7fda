package server

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	filev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"

	"github.com/trellis-mesh/trellis/internal/proxy/accesslog"
)

// An HCM access_log sees every request once it is done, with the Envoy response flags that say why
// a local reply was sent.
func TestAccessLogRecordsEachRequestWithItsResponseFlags(t *testing.T) {
	p := newProxy(t, Options{})
	be := newBackend(t, "a", nil)
	path := filepath.Join(t.TempDir(), "access.log")
	rc := routeConfig("r", []string{"*"},
		routeTo("/ok", toCluster("a")),
		routeTo("/missing", toCluster("nope")))
	l := hcmListener(t, "l", "127.0.0.1:0", "", rc)
	withAccessLog(t, l, path, "%RESPONSE_CODE% %RESPONSE_FLAGS% %UPSTREAM_CLUSTER% %REQ(:PATH)%\n")
	mustApply(t, p, ClusterType, msgs(staticCluster("a", be.addr)))
	mustApply(t, p, ListenerType, msgs(l))
	base := "http://" + listenerAddr(t, p, "l")
	c := keepAliveClient(t)
	for _, path := range []string{"/ok", "/missing"} {
		do(t, c, "GET", base+path, "", nil)
	}
	want := []string{"200 - a /ok", "503 NC nope /missing"}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := accesslog.Default.Flush(); err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(path)
		got := strings.Split(strings.TrimSpace(string(b)), "\n")
		if len(got) == len(want) && got[0] == want[0] && got[1] == want[1] {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("access log holds %q, want %q", got, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// withAccessLog adds a file access log with format to l's HTTP connection manager.
func withAccessLog(t *testing.T, l *listenerv3.Listener, path, format string) {
	t.Helper()
	editHCM(t, l, func(h *hcmv3.HttpConnectionManager) {
		h.AccessLog = append(h.AccessLog, &accesslogv3.AccessLog{
			Name: "envoy.access_loggers.file",
			ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: mustAnyT(t, &filev3.FileAccessLog{
				Path: path,
				AccessLogFormat: &filev3.FileAccessLog_LogFormat{LogFormat: &corev3.SubstitutionFormatString{
					Format: &corev3.SubstitutionFormatString_TextFormatSource{TextFormatSource: &corev3.DataSource{
						Specifier: &corev3.DataSource_InlineString{InlineString: format},
					}},
				}},
			})},
		})
	})
}

// editHCM changes the HTTP connection manager of l's first filter chain.
func editHCM(t *testing.T, l *listenerv3.Listener, edit func(*hcmv3.HttpConnectionManager)) {
	t.Helper()
	f := l.GetFilterChains()[0].GetFilters()[0]
	var h hcmv3.HttpConnectionManager
	if err := f.GetTypedConfig().UnmarshalTo(&h); err != nil {
		t.Fatal(err)
	}
	edit(&h)
	f.ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: mustAnyT(t, &h)}
}
