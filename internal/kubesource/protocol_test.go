package kubesource

import (
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/trellis-mesh/trellis/internal/model"
)

// Istio's protocol selection for Service ports: appProtocol first, then
// the port name's prefix; what neither names is TCP here (Istio sniffs).
func TestServicePortProtocolFollowsIstioSelection(t *testing.T) {
	str := func(s string) *string { return &s }
	for _, tc := range []struct {
		port corev1.ServicePort
		want model.Protocol
		ok   bool
	}{
		{corev1.ServicePort{Name: "http"}, "HTTP", true},
		{corev1.ServicePort{Name: "http-web"}, "HTTP", true},
		{corev1.ServicePort{Name: "HTTP2-api"}, "HTTP2", true},
		{corev1.ServicePort{Name: "grpc-api"}, "GRPC", true},
		{corev1.ServicePort{Name: "grpc-web-ui"}, "GRPC-WEB", true},
		{corev1.ServicePort{Name: "https-admin"}, "HTTPS", true},
		{corev1.ServicePort{Name: "tls"}, "TLS", true},
		{corev1.ServicePort{Name: "mongo-db"}, "MONGO", true},
		{corev1.ServicePort{Name: "tcp-raw"}, "TCP", true},
		{corev1.ServicePort{Name: "web"}, "TCP", true},
		{corev1.ServicePort{}, "TCP", true},
		{corev1.ServicePort{Name: "tcp", AppProtocol: str("http")}, "HTTP", true},
		{corev1.ServicePort{Name: "web", AppProtocol: str("kubernetes.io/h2c")}, "HTTP2", true},
		{corev1.ServicePort{AppProtocol: str("kubernetes.io/ws")}, "HTTP", true},
		{corev1.ServicePort{AppProtocol: str("kubernetes.io/wss")}, "HTTPS", true},
		{corev1.ServicePort{Name: "dns", Protocol: corev1.ProtocolUDP}, "", false},
		{corev1.ServicePort{Name: "http", Protocol: corev1.ProtocolSCTP}, "", false},
	} {
		got, ok := protocolOf(tc.port)
		if got != tc.want || ok != tc.ok {
			app := "<nil>"
			if tc.port.AppProtocol != nil {
				app = *tc.port.AppProtocol
			}
			t.Errorf("name %q appProtocol %s protocol %q: got %q, %v; want %q, %v", tc.port.Name, app, tc.port.Protocol, got, ok, tc.want, tc.ok)
		}
	}
}
