package xds

import (
	"maps"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/trellis-mesh/trellis/internal/model"
)

func TestProxyFromNodeReadsIstioMetadata(t *testing.T) {
	for _, tc := range []struct {
		name       string
		id         string
		meta       map[string]any
		wantMode   model.InterceptionMode
		wantLabels map[string]string
		wantErr    string
	}{
		{name: "defaults to REDIRECT", id: reviewsID, wantMode: model.InterceptRedirect},
		{name: "local mode", id: reviewsID, meta: map[string]any{"INTERCEPTION_MODE": "NONE"}, wantMode: model.InterceptNone},
		{
			name:       "labels",
			id:         "router~127.0.1.1~istio-ingressgateway.istio-system~istio-system.svc.cluster.local",
			meta:       map[string]any{"LABELS": map[string]any{"istio": "ingressgateway"}, "OTHER": 1},
			wantMode:   model.InterceptRedirect,
			wantLabels: map[string]string{"istio": "ingressgateway"},
		},
		{name: "unknown mode", id: reviewsID, meta: map[string]any{"INTERCEPTION_MODE": "MAGIC"}, wantErr: `INTERCEPTION_MODE: "MAGIC"`},
		{name: "mode not a string", id: reviewsID, meta: map[string]any{"INTERCEPTION_MODE": 3}, wantErr: "want a string"},
		{name: "label not a string", id: reviewsID, meta: map[string]any{"LABELS": map[string]any{"v": true}}, wantErr: "LABELS: v: want a string"},
		{name: "bad id", id: "x~y", wantErr: "want 4 fields"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			md, err := structpb.NewStruct(tc.meta)
			if err != nil {
				t.Fatal(err)
			}
			p, err := proxyFromNode(&corev3.Node{Id: tc.id, Metadata: md})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.Interception != tc.wantMode || !maps.Equal(p.Labels, tc.wantLabels) {
				t.Fatalf("got mode %s labels %v", p.Interception, p.Labels)
			}
		})
	}
}
