package extauthz

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/trellis-mesh/trellis/internal/proxy/filters"
	"github.com/trellis-mesh/trellis/internal/proxy/route"
	"github.com/trellis-mesh/trellis/internal/proxy/upstream"
)

const checkPath = "/envoy.service.auth.v3.Authorization/Check"

// streamIDs number check requests' http.id, as Envoy's stream ids do.
var streamIDs atomic.Uint64

// checkGRPC asks a gRPC authorization service with a CheckRequest filled as Envoy's
// CheckRequestUtils::createHttpCheck does.
func (f *Filter) checkGRPC(ctx context.Context, cl *upstream.Cluster, x *filters.Exchange, body []byte, withBody, partial bool, pr *PerRoute) (*response, error) {
	s := f.cfg.GRPC
	msg, err := proto.Marshal(f.checkRequest(ctx, x, body, withBody, partial, pr))
	if err != nil {
		return nil, err
	}
	frame := make([]byte, 5+len(msg))
	binary.BigEndian.PutUint32(frame[1:5], uint32(len(msg)))
	copy(frame[5:], msg)
	hdr := http.Header{
		"Content-Type": {"application/grpc"},
		"Te":           {"trailers"},
		"Grpc-Timeout": {strconv.FormatInt(max(s.Timeout.Milliseconds(), 1), 10) + "m"},
	}
	for _, kv := range s.Metadata {
		hdr.Add(kv[0], kv[1])
	}
	req := &http.Request{
		Method: http.MethodPost, Proto: "HTTP/2.0", ProtoMajor: 2, Header: hdr, Host: s.Authority,
		Body: io.NopCloser(bytes.NewReader(frame)), ContentLength: int64(len(frame)),
	}
	resp, answer, err := roundTrip(ctx, cl, req, checkPath, true)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("authorization service answered HTTP %d", resp.StatusCode)
	}
	st := resp.Trailer.Get("Grpc-Status")
	if st == "" {
		st = resp.Header.Get("Grpc-Status") // trailers-only answer
	}
	if st != "0" {
		return nil, fmt.Errorf("authorization service answered grpc-status %q", st)
	}
	if len(answer) < 5 || answer[0] != 0 || int(binary.BigEndian.Uint32(answer[1:5])) != len(answer)-5 {
		return nil, errors.New("authorization service: malformed gRPC message (compressed or truncated)")
	}
	var cr authv3.CheckResponse
	if err := proto.Unmarshal(answer[5:], &cr); err != nil {
		return nil, err
	}
	return fromCheckResponse(&cr), nil
}

func (f *Filter) checkRequest(ctx context.Context, x *filters.Exchange, body []byte, withBody, partial bool, pr *PerRoute) *authv3.CheckRequest {
	c := f.cfg
	headers := make(map[string]string, len(x.Headers)+4)
	scheme := "http"
	if x.TLS != nil {
		scheme = "https"
	}
	// Envoy's header map carries the pseudo-headers too.
	for _, kv := range [...][2]string{{":authority", x.Authority}, {":method", x.Method}, {":path", x.Path}, {":scheme", scheme}} {
		if (c.allowed == nil || c.allowed.match(kv[0])) && !c.disallowed.match(kv[0]) {
			headers[kv[0]] = kv[1]
		}
	}
	for k, vs := range x.Headers {
		lk := strings.ToLower(k)
		if lk == headerPartialBody || (c.allowed != nil && !c.allowed.match(lk)) || c.disallowed.match(lk) {
			continue
		}
		headers[lk] = strings.Join(vs, ",")
	}
	hr := &authv3.AttributeContext_HttpRequest{
		Id: strconv.FormatUint(streamIDs.Add(1), 10), Method: x.Method, Headers: headers, Path: x.Path,
		Host: x.Authority, Scheme: scheme, Protocol: x.Info.Protocol, Size: int64(len(body)),
	}
	if withBody {
		if c.bodyAsBytes(pr) {
			hr.RawBody = body
		} else {
			hr.Body = strings.ToValidUTF8(string(body), "\uFFFD")
		}
		headers[headerPartialBody] = strconv.FormatBool(partial)
	}
	attrs := &authv3.AttributeContext{
		Source:      &authv3.AttributeContext_Peer{Address: socketAddress(x.Info.DownstreamRemoteAddr), Service: x.Headers.Get("X-Envoy-Downstream-Service-Cluster")},
		Destination: &authv3.AttributeContext_Peer{},
		Request:     &authv3.AttributeContext_Request{Time: timestamppb.New(x.Info.Start), Http: hr},
	}
	if a, ok := ctx.Value(http.LocalAddrContextKey).(net.Addr); ok && a != nil {
		attrs.Destination.Address = socketAddress(a.String())
	}
	if x.TLS != nil && len(x.TLS.PeerCertificates) > 0 {
		cert := x.TLS.PeerCertificates[0]
		attrs.Source.Principal = principal(cert)
		if x.Info.DownstreamPeerURISAN != "" {
			attrs.Source.Principal = x.Info.DownstreamPeerURISAN
		}
		if c.IncludePeerCertificate {
			attrs.Source.Certificate = url.QueryEscape(string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})))
		}
	}
	// context_extensions merge from the least to the most specific level, as Envoy's
	// getAllPerFilterConfig does; levels are looked up by the filter's canonical name.
	var levels [3]route.FilterConfigs
	if x.Table != nil {
		levels[0] = x.Table.FilterConfigs
	}
	if x.VirtualHost != nil {
		levels[1] = x.VirtualHost.FilterConfigs
	}
	if x.Route != nil {
		levels[2] = x.Route.FilterConfigs
	}
	for _, l := range levels {
		if p, ok := l[Name].Config.(*PerRoute); ok {
			for k, v := range p.ContextExtensions {
				if attrs.ContextExtensions == nil {
					attrs.ContextExtensions = map[string]string{}
				}
				attrs.ContextExtensions[k] = v
			}
		}
	}
	if pr != nil && len(attrs.ContextExtensions) == 0 && len(pr.ContextExtensions) > 0 {
		attrs.ContextExtensions = pr.ContextExtensions // a level the lookup above cannot see (weighted cluster)
	}
	for _, ns := range c.MetadataContextNamespaces {
		if s := x.Info.DynamicMetadata[ns]; s != nil {
			if attrs.MetadataContext == nil {
				attrs.MetadataContext = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{}}
			}
			attrs.MetadataContext.FilterMetadata[ns] = s
		}
	}
	return &authv3.CheckRequest{Attributes: attrs}
}

func (c *Config) bodyAsBytes(pr *PerRoute) bool {
	if bs := bodySettings(c, pr); bs != nil {
		return bs.PackAsBytes
	}
	return false
}

// principal is Envoy's choice for a peer: its first URI SAN, else DNS SAN, else subject.
func principal(cert *x509.Certificate) string {
	if len(cert.URIs) > 0 {
		return cert.URIs[0].String()
	}
	if len(cert.DNSNames) > 0 {
		return cert.DNSNames[0]
	}
	return cert.Subject.String()
}

func socketAddress(hostport string) *corev3.Address {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return nil
	}
	n, _ := strconv.ParseUint(port, 10, 32)
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(n)},
	}}}
}

// fromCheckResponse reads a CheckResponse as Envoy's GrpcClientImpl::onSuccess does.
func fromCheckResponse(cr *authv3.CheckResponse) *response {
	r := &response{metadata: cr.GetDynamicMetadata()}
	//lint:ignore SA1019 services still set the deprecated field; it wins, as in Envoy.
	if md := cr.GetOkResponse().GetDynamicMetadata(); md != nil {
		r.metadata = md
	}
	if e := cr.GetErrorResponse(); e != nil {
		r.status, r.code, r.body = statusError, int(e.GetStatus().GetCode()), e.GetBody()
		if r.code == 0 {
			r.code = http.StatusForbidden
		}
		r.clientHeaders = deniedHeaders(e.GetHeaders())
		return r
	}
	if cr.GetStatus().GetCode() != 0 {
		r.status, r.code = statusDenied, http.StatusForbidden
		if d := cr.GetDeniedResponse(); d != nil {
			if code := d.GetStatus().GetCode(); code > 0 {
				r.code = int(code)
			}
			r.body = d.GetBody()
			r.clientHeaders = deniedHeaders(d.GetHeaders())
		}
		return r
	}
	ok := cr.GetOkResponse()
	for _, h := range ok.GetHeaders() {
		kv := [2]string{http.CanonicalHeaderKey(h.GetHeader().GetKey()), h.GetHeader().GetValue()}
		hasAppend, appendIt := appendOf(h)
		switch {
		case hasAppend && appendIt:
			r.appendTo = append(r.appendTo, kv)
		case hasAppend:
			r.set = append(r.set, kv)
		case h.GetAppendAction() == corev3.HeaderValueOption_ADD_IF_ABSENT:
			r.addIfAbsent = append(r.addIfAbsent, kv)
		case h.GetAppendAction() == corev3.HeaderValueOption_OVERWRITE_IF_EXISTS:
			r.overwriteIfExists = append(r.overwriteIfExists, kv)
		default:
			// Unset (or APPEND_IF_EXISTS_OR_ADD, the enum's zero value, which cannot be told from
			// unset) and OVERWRITE_IF_EXISTS_OR_ADD replace the client's value: the API documents
			// append as false by default here, and a client must not be able to smuggle in a
			// second x-user-id next to the service's.
			r.set = append(r.set, kv)
		}
	}
	r.remove = ok.GetHeadersToRemove()
	for _, h := range ok.GetResponseHeadersToAdd() {
		kv := [2]string{http.CanonicalHeaderKey(h.GetHeader().GetKey()), h.GetHeader().GetValue()}
		if hasAppend, appendIt := appendOf(h); hasAppend && !appendIt {
			r.clientSet = append(r.clientSet, kv)
		} else {
			r.clientAdd = append(r.clientAdd, kv)
		}
	}
	return r
}

// deniedHeaders are a denial's headers for the client; append is false by default there.
func deniedHeaders(hs []*corev3.HeaderValueOption) http.Header {
	if len(hs) == 0 {
		return nil
	}
	out := make(http.Header, len(hs))
	for _, h := range hs {
		k := http.CanonicalHeaderKey(h.GetHeader().GetKey())
		if _, appendIt := appendOf(h); appendIt {
			continue // Envoy sends only the headers to set on a denial
		}
		if hopByHop(strings.ToLower(k)) {
			continue
		}
		out[k] = append(out[k], h.GetHeader().GetValue())
	}
	return out
}

// appendOf reads HeaderValueOption.append: whether it is set, and its value.
func appendOf(h *corev3.HeaderValueOption) (set, value bool) {
	//lint:ignore SA1019 authorization services set the deprecated append; Envoy's ext_authz reads it first.
	a := h.GetAppend()
	return a != nil, a.GetValue()
}
