package istiostats

import (
	"strings"
	"testing"

	udpatypev1 "github.com/cncf/xds/go/udpa/type/v1"
	xdstypev3 "github.com/cncf/xds/go/xds/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	statspb "istio.io/api/envoy/extensions/stats"
)

func TestConfigAcceptsWhatIstioSendsAndRejectsWhatIsNotImplemented(t *testing.T) {
	value := func(m map[string]any) *structpb.Struct {
		s, err := structpb.NewStruct(m)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	pack := func(m interface{}) *anypb.Any {
		var a *anypb.Any
		var err error
		switch v := m.(type) {
		case *statspb.PluginConfig:
			a, err = anypb.New(v)
		case *udpatypev1.TypedStruct:
			a, err = anypb.New(v)
		case *xdstypev3.TypedStruct:
			a, err = anypb.New(v)
		}
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	tests := []struct {
		name    string
		tc      *anypb.Any
		want    Config
		wantErr string
	}{
		{"no config", nil, Config{}, ""},
		{"plain", pack(&statspb.PluginConfig{Reporter: statspb.Reporter_SERVER_GATEWAY}), Config{ServerGateway: true}, ""},
		{"xds typed struct", pack(&xdstypev3.TypedStruct{TypeUrl: TypeURL, Value: value(map[string]any{"disable_host_header_fallback": true})}),
			Config{DisableHostHeaderFallback: true}, ""},
		{"udpa typed struct, JSON names", pack(&udpatypev1.TypedStruct{TypeUrl: TypeURL, Value: value(map[string]any{"disableHostHeaderFallback": true, "debug": true})}),
			Config{DisableHostHeaderFallback: true}, ""},
		{"custom metrics", pack(&statspb.PluginConfig{Metrics: []*statspb.MetricConfig{{Name: "requests_total"}}}), Config{}, "metrics: not supported"},
		{"tcp reporting period", pack(&xdstypev3.TypedStruct{TypeUrl: TypeURL, Value: value(map[string]any{"tcp_reporting_duration": "5s"})}), Config{}, "tcp_reporting_duration: not supported"},
		{"other prefix", pack(&statspb.PluginConfig{StatPrefix: "mine"}), Config{}, `stat_prefix "mine"`},
		{"unknown field", pack(&xdstypev3.TypedStruct{TypeUrl: TypeURL, Value: value(map[string]any{"nosuch": 1})}), Config{}, "nosuch"},
		{"wrong wrapped type", pack(&xdstypev3.TypedStruct{TypeUrl: "type.googleapis.com/other.Config"}), Config{}, "other.Config"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.tc)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one mentioning %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if *got != tt.want {
				t.Fatalf("got %+v, want %+v", *got, tt.want)
			}
		})
	}
}
