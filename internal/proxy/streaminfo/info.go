package streaminfo

import (
	"net/http"
	"time"

	"google.golang.org/protobuf/types/known/structpb"
)

// Info describes one HTTP request (or one TCP connection, where the HTTP fields stay empty) from the
// proxy's side. The code that owns the request fills it in as it goes; readers (access logs, stats)
// see it once the request is done and must not keep it.
type Info struct {
	Start    time.Time
	Duration time.Duration // until the last byte went downstream

	// Protocol is "HTTP/1.1", "HTTP/2" or "" for TCP.
	Protocol  string
	Method    string
	Path      string // as received, before any rewrite
	Authority string
	// RequestHeaders and ResponseHeaders are the downstream request's and the response's headers as
	// sent; nil for TCP.
	RequestHeaders  http.Header
	ResponseHeaders http.Header

	DownstreamRemoteAddr string
	DownstreamLocalAddr  string
	// ServerName is the TLS SNI the downstream sent, if any.
	ServerName string
	// DownstreamTLS is set when the downstream connection is TLS (terminated by this proxy).
	DownstreamTLS bool
	// DownstreamPeerURISAN is the first URI SAN of the downstream's verified client certificate,
	// e.g. "spiffe://cluster.local/ns/default/sa/sleep" (Envoy's %DOWNSTREAM_PEER_URI_SAN%); ""
	// without a verified client certificate.
	DownstreamPeerURISAN string

	RouteName       string
	UpstreamCluster string
	UpstreamHost    string // address of the last host tried
	// UpstreamWorkload is that host's Istio workload endpoint metadata
	// (filter_metadata["istio"]["workload"], "name;namespace;service;revision;cluster"), if any.
	UpstreamWorkload string
	// UpstreamServiceTime is from the request leaving for the upstream until its response headers
	// came back (x-envoy-upstream-service-time).
	UpstreamServiceTime time.Duration
	// Attempts counts upstream tries, retries included.
	Attempts int

	ResponseCode int
	// ResponseCodeDetails says why a local reply was sent (Envoy's %RESPONSE_CODE_DETAILS%), e.g.
	// "route_not_found"; "via_upstream" when the upstream answered.
	ResponseCodeDetails string
	Flags               Flags

	BytesReceived int64 // request body (HTTP) or bytes from downstream (TCP)
	BytesSent     int64 // response body (HTTP) or bytes to downstream (TCP)

	// DynamicMetadata is Envoy's dynamic metadata: filter name → fields, e.g. a JWT's payload
	// under "envoy.filters.http.jwt_authn", RBAC shadow results under "envoy.filters.http.rbac".
	// nil until a filter sets some (SetMetadata).
	DynamicMetadata map[string]*structpb.Struct

	// Peer is what a telemetry filter learnt of the other side of the request (Istio's metadata
	// exchange), for its own OnComplete; opaque here.
	Peer any
}

// SetMetadata sets one field of a filter's dynamic metadata namespace, creating both as needed.
func (i *Info) SetMetadata(filter, key string, v *structpb.Value) {
	if i.DynamicMetadata == nil {
		i.DynamicMetadata = make(map[string]*structpb.Struct, 1)
	}
	s := i.DynamicMetadata[filter]
	if s == nil {
		s = &structpb.Struct{Fields: make(map[string]*structpb.Value, 1)}
		i.DynamicMetadata[filter] = s
	}
	s.Fields[key] = v
}

// SetFlag adds f to the request's response flags.
func (i *Info) SetFlag(f Flags) { i.Flags |= f }

// Reset clears i for reuse, keeping nothing of the previous request.
func (i *Info) Reset() { *i = Info{} }
