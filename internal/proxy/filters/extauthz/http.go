package extauthz

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/trellis-mesh/trellis/internal/proxy/filters"
	"github.com/trellis-mesh/trellis/internal/proxy/upstream"
)

// maxAnswerBody bounds what is read of an authorization service's answer body.
const maxAnswerBody = 1 << 20

// checkHTTP asks an HTTP authorization service, as Envoy's RawHttpClientImpl does: the request's
// method and path (after path_prefix), its authority, the allowed headers (Authorization always),
// headers_to_add and, with with_request_body, the body. 200 allows; a 5xx or a failed call is an
// error; anything else denies with the service's status, body and allowed client headers.
func (f *Filter) checkHTTP(ctx context.Context, cl *upstream.Cluster, x *filters.Exchange, body []byte, withBody, partial bool) (*response, error) {
	c, s := f.cfg, f.cfg.HTTP
	hdr := make(http.Header, 8)
	for k, vs := range x.Headers {
		lk := strings.ToLower(k)
		if lk == "content-length" || lk == headerPartialBody || !c.allowed.match(lk) || c.disallowed.match(lk) {
			continue
		}
		// Envoy's check request carries one value per name, repeated headers joined with ",".
		hdr[k] = []string{strings.Join(vs, ",")}
	}
	if withBody {
		hdr.Set(headerPartialBody, strconv.FormatBool(partial))
	}
	for _, kv := range s.HeadersToAdd {
		hdr[kv[0]] = []string{kv[1]}
	}
	req := &http.Request{
		Method: x.Method, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: hdr, Host: x.Authority, Body: http.NoBody,
	}
	if len(body) > 0 {
		req.Body, req.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
	}
	resp, answer, err := roundTrip(ctx, cl, req, s.PathPrefix+x.Path, false)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode >= 500 {
		return nil, fmt.Errorf("authorization service answered %d", resp.StatusCode)
	}
	r := &response{}
	if resp.StatusCode == http.StatusOK {
		for _, v := range resp.Header[headerHeadersToRemove] {
			for name := range strings.SplitSeq(v, ",") {
				if name = strings.TrimSpace(name); name != "" {
					r.remove = append(r.remove, name)
				}
			}
		}
	}
	delete(resp.Header, headerHeadersToRemove)
	for k, vs := range resp.Header {
		lk := strings.ToLower(k)
		for _, v := range vs {
			if s.toMetadata.match(lk) {
				if r.metadata == nil {
					r.metadata = &structpb.Struct{Fields: map[string]*structpb.Value{}}
				}
				r.metadata.Fields[lk] = structpb.NewStringValue(v)
			}
			if resp.StatusCode != http.StatusOK {
				if s.client.match(lk) && !hopByHop(lk) {
					if r.clientHeaders == nil {
						r.clientHeaders = http.Header{}
					}
					r.clientHeaders[k] = append(r.clientHeaders[k], v)
				}
				continue
			}
			if s.upstream.match(lk) {
				r.set = append(r.set, [2]string{k, v})
			}
			if s.upstreamAppend.match(lk) {
				r.add = append(r.add, [2]string{k, v})
			}
			if s.clientOnSuccess.match(lk) {
				r.clientAdd = append(r.clientAdd, [2]string{k, v})
			}
		}
	}
	if resp.StatusCode != http.StatusOK {
		r.status, r.code, r.body = statusDenied, resp.StatusCode, string(answer)
	}
	return r, nil
}

// hopByHop headers belong to one connection; the proxy's writer sets its own framing.
func hopByHop(lk string) bool {
	switch lk {
	case "content-length", "transfer-encoding", "connection", "keep-alive", "te", "trailer", "upgrade":
		return true
	}
	return false
}

var errNoHost = errors.New("ext_authz: no healthy host in the authorization cluster")

// roundTrip sends req to a host of cl, counting it as the router counts upstream requests, and
// reads the answer's body. h2 asks for HTTP/2 (gRPC).
func roundTrip(ctx context.Context, cl *upstream.Cluster, req *http.Request, path string, h2 bool) (*http.Response, []byte, error) {
	if h2 && cl.Config().Protocol == upstream.HTTP1 {
		return nil, nil, fmt.Errorf("cluster %q speaks HTTP/1.1 only; gRPC needs HTTP/2", cl.Name())
	}
	host := cl.Pick()
	if host == nil {
		cl.Stats.NoneHealthy.Inc()
		return nil, nil, errNoHost
	}
	if !cl.TryRequest() {
		return nil, nil, errors.New("ext_authz: circuit breaker open (max_requests)")
	}
	defer cl.ReleaseRequest()
	req.URL = &url.URL{Scheme: "http", Host: host.Target(), Opaque: path}
	req = req.WithContext(ctx)
	host.Begin()
	cl.Stats.RqTotal.Inc()
	resp, err := cl.Transport(h2).RoundTrip(req)
	if err != nil {
		host.End(true)
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBody))
	host.End(err != nil || resp.StatusCode >= 500)
	cl.Stats.RecordStatus(resp.StatusCode)
	if err != nil {
		return nil, nil, err
	}
	return resp, b, nil
}
