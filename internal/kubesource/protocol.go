package kubesource

import (
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/trellis-mesh/trellis/internal/model"
)

// protocolOf is the Istio protocol of a Service port, by Istio's rules
// (pkg/config/kube ConvertProtocol): appProtocol if set, else the port
// name's prefix before the first "-" (grpc-web- whole), case-insensitive.
// Istio sniffs the protocol of a port it cannot name; Trellis has no
// sniffing, so such a port is TCP. ok is false for UDP and SCTP ports,
// which the mesh does not carry.
func protocolOf(p corev1.ServicePort) (proto model.Protocol, ok bool) {
	if p.Protocol == corev1.ProtocolUDP || p.Protocol == corev1.ProtocolSCTP {
		return "", false
	}
	name := p.Name
	if p.AppProtocol != nil {
		name = *p.AppProtocol
		// Kubernetes' standard appProtocol names.
		switch name {
		case "kubernetes.io/h2c":
			return "HTTP2", true
		case "kubernetes.io/ws":
			return "HTTP", true
		case "kubernetes.io/wss":
			return "HTTPS", true
		}
	}
	lower := strings.ToLower(name)
	if strings.HasPrefix(lower, "grpc-web") {
		return "GRPC-WEB", true
	}
	if i := strings.IndexByte(lower, '-'); i >= 0 {
		lower = lower[:i]
	}
	switch lower {
	case "http", "https", "http2", "grpc", "tcp", "tls", "mongo", "redis", "mysql":
		return model.Protocol(strings.ToUpper(lower)), true
	}
	return "TCP", true
}
