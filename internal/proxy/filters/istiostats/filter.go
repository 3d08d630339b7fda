package istiostats

import (
	"context"
	"net/http"
	"strings"

	"github.com/trellis-mesh/trellis/internal/proxy/filters"
	im "github.com/trellis-mesh/trellis/internal/proxy/istiometrics"
	"github.com/trellis-mesh/trellis/internal/proxy/streaminfo"
)

// Build makes the running HTTP filter. Without the proxy's telemetry (a proxy built without
// one, as in some tests) it does nothing.
func (c *Config) Build(env filters.Env) filters.Filter {
	return &Filter{cfg: c, t: env.Telemetry, destination: c.ServerGateway || env.Inbound}
}

// Filter is the HTTP side of istio.stats.
type Filter struct {
	cfg *Config
	t   *im.Telemetry
	// destination: this proxy reports as the server's side (inbound listener or server gateway).
	destination bool
}

var (
	_ filters.Observer       = (*Filter)(nil)
	_ filters.ResponseFilter = (*Filter)(nil)
)

// OnRequest does the request half of the metadata exchange: the destination side reads and strips
// the client's identity and sends its own back; the source side sends its own.
func (f *Filter) OnRequest(_ context.Context, x *filters.Exchange, _ any) filters.Status {
	t := f.t
	if t == nil {
		return filters.Continue
	}
	h := x.Headers
	if f.destination {
		if v := h[im.HeaderPeerMetadata]; len(v) > 0 {
			x.Info.Peer = t.Peers.Get(v[0], im.ParseExchangeValue)
		}
		delete(h, im.HeaderPeerMetadata)
		delete(h, im.HeaderPeerMetadataID)
		x.AddResponseHeader(im.HeaderPeerMetadata, t.ExchangeValue[0])
		x.AddResponseHeader(im.HeaderPeerMetadataID, t.ExchangeID[0])
		return filters.Continue
	}
	if !meshCluster(x.Cluster) {
		// Passthrough and black hole clusters lead out of the mesh: nobody there to tell.
		delete(h, im.HeaderPeerMetadata)
		delete(h, im.HeaderPeerMetadataID)
		return filters.Continue
	}
	// Whatever the app sent under these names is replaced: only proxies speak for workloads.
	h[im.HeaderPeerMetadata] = t.ExchangeValue
	h[im.HeaderPeerMetadataID] = t.ExchangeID
	return filters.Continue
}

// meshCluster reports whether cluster is one Istio names for a service ("outbound|port|subset|host").
func meshCluster(cluster string) bool { return strings.HasPrefix(cluster, "outbound|") }

// OnUpstreamResponse does the response half: the source side reads the server's identity; both
// strip the headers (on the destination side they came from the app, which speaks for nobody).
func (f *Filter) OnUpstreamResponse(info *streaminfo.Info, h http.Header) {
	if f.t == nil {
		return
	}
	if !f.destination {
		if v := h[im.HeaderPeerMetadata]; len(v) > 0 {
			info.Peer = f.t.Peers.Get(v[0], im.ParseExchangeValue)
		}
	}
	delete(h, im.HeaderPeerMetadata)
	delete(h, im.HeaderPeerMetadataID)
}

// ObservesEveryRequest implements filters.Observer: requests without a route count too.
func (f *Filter) ObservesEveryRequest() {}

// OnComplete records the request.
func (f *Filter) OnComplete(info *streaminfo.Info) {
	t := f.t
	if t == nil {
		return
	}
	peer, _ := info.Peer.(*im.Identity)
	k := im.HTTPKey{Protocol: im.ProtocolHTTP, Code: int32(info.ResponseCode), GRPCStatus: -1, Flags: info.Flags}
	host := info.Authority
	if f.cfg.DisableHostHeaderFallback {
		host = ""
	}
	if f.destination {
		if peer == nil {
			// The filter did not run (no route): the headers are still there.
			if v := info.RequestHeaders[im.HeaderPeerMetadata]; len(v) > 0 {
				peer = t.Peers.Get(v[0], im.ParseExchangeValue)
			}
		}
		k.Reporter, k.Source, k.Destination = im.ReporterDestination, peer, t.Self
		k.Security, k.SourcePrincipal = downstreamSecurity(info)
	} else {
		if peer == nil && info.UpstreamWorkload != "" {
			peer = t.Workloads.Get(info.UpstreamWorkload, im.IdentityFromWorkloadMetadata)
		}
		k.Reporter, k.Source, k.Destination = im.ReporterSource, t.Self, peer
		k.Security = im.SecurityUnknown
	}
	k.Service = t.ServiceOf(info.UpstreamCluster, host, t.Self.Namespace)
	if isGRPC(info.RequestHeaders) {
		k.Protocol = im.ProtocolGRPC
		k.GRPCStatus = grpcStatus(info.ResponseHeaders)
	}
	s := t.HTTP.With(k)
	s.Add(im.RequestsTotal, 1)
	s.Observe(im.RequestDuration, float64(info.Duration.Microseconds())/1000)
	s.Observe(im.RequestBytes, float64(info.BytesReceived))
	s.Observe(im.ResponseBytes, float64(info.BytesSent))
}

// downstreamSecurity is connection_security_policy as the server side sees it, with the source
// principal the client's certificate proved: "mutual_tls" when the downstream connection is TLS
// with a client certificate (mesh listeners verify it against ROOTCA before the request gets
// here), else "none". The principal is the certificate's URI SAN, "spiffe://<td>/ns/<ns>/sa/<sa>".
func downstreamSecurity(info *streaminfo.Info) (im.Security, string) {
	if info.DownstreamTLS && info.DownstreamPeerURISAN != "" {
		return im.SecurityMutualTLS, info.DownstreamPeerURISAN
	}
	return im.SecurityNone, ""
}

func isGRPC(h http.Header) bool {
	ct := h["Content-Type"]
	return len(ct) > 0 && strings.HasPrefix(ct[0], "application/grpc")
}

// grpcStatus reads grpc-status from the response's headers (trailers-only responses) or trailers;
// -1 when there is none.
func grpcStatus(h http.Header) int32 {
	v := h["Grpc-Status"]
	if len(v) == 0 {
		v = h[http.TrailerPrefix+"Grpc-Status"]
	}
	if len(v) == 0 || v[0] == "" || len(v[0]) > 3 {
		return -1
	}
	n := int32(0)
	for i := 0; i < len(v[0]); i++ {
		c := v[0][i]
		if c < '0' || c > '9' {
			return -1
		}
		n = n*10 + int32(c-'0')
	}
	return n
}
