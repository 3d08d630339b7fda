package extauthz

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/trellis-mesh/trellis/internal/proxy/filters"
	"github.com/trellis-mesh/trellis/internal/proxy/stats"
	"github.com/trellis-mesh/trellis/internal/proxy/streaminfo"
	"github.com/trellis-mesh/trellis/internal/proxy/upstream"
)

// Envoy's %RESPONSE_CODE_DETAILS% for the filter's replies.
const (
	DetailsDenied = "ext_authz_denied"
	DetailsError  = "ext_authz_error"
	// detailsTooLarge is the connection manager's when a body outgrows the buffer a filter asked for.
	detailsTooLarge = "request_payload_too_large"
)

// Headers the filter reads or writes.
const (
	headerFailureModeAllowed = "X-Envoy-Auth-Failure-Mode-Allowed"
	headerPartialBody        = "x-envoy-auth-partial-body"
	headerHeadersToRemove    = "X-Envoy-Auth-Headers-To-Remove"
)

// counters are one scope's ext_authz stats.
type counters struct {
	ok, denied, failed, disabled, failureModeAllowed *stats.Counter
}

func newCounters(s *stats.Store, prefix string) *counters {
	return &counters{
		ok:                 s.Counter(prefix + "ok"),
		denied:             s.Counter(prefix + "denied"),
		failed:             s.Counter(prefix + "error"),
		disabled:           s.Counter(prefix + "disabled"),
		failureModeAllowed: s.Counter(prefix + "failure_mode_allowed"),
	}
}

// Build makes the running filter: its stats are Envoy's, http.<hcm>.ext_authz.[<stat_prefix>.]*
// and, per route target cluster, cluster.<cluster>.ext_authz.[<stat_prefix>.]*.
func (c *Config) Build(env filters.Env) filters.Filter {
	return &Filter{
		cfg:      c,
		store:    env.Stats,
		clusters: env.Clusters,
		stats:    newCounters(env.Stats, "http."+env.StatPrefix+".ext_authz."+c.StatPrefix),
	}
}

// Filter asks the authorization service about each request it runs on.
type Filter struct {
	cfg      *Config
	store    *stats.Store
	clusters func(string) *upstream.Cluster
	stats    *counters
	// byCluster caches the cluster.<name>.ext_authz.* counters (string → *counters).
	byCluster sync.Map
}

// checkStatus is the service's answer.
type checkStatus int

const (
	statusOK checkStatus = iota
	statusDenied
	statusError
)

// response is an authorization answer in the filter's terms, whichever service gave it.
type response struct {
	status checkStatus
	// Request header changes of an OK answer (canonical keys): set replaces, add adds a value,
	// appendTo joins to an existing value with ",", remove deletes.
	set, add, appendTo, addIfAbsent, overwriteIfExists [][2]string
	remove                                             []string
	// Response headers of an OK answer: added to, or set on, whatever answers the client.
	clientAdd, clientSet [][2]string
	// metadata goes to DynamicMetadata["envoy.filters.http.ext_authz"].
	metadata *structpb.Struct
	// A denial (or an error with a custom answer): status, headers and body for the client.
	code          int
	body          string
	clientHeaders http.Header
}

// OnRequest implements filters.Filter.
func (f *Filter) OnRequest(ctx context.Context, x *filters.Exchange, perRoute any) filters.Status {
	c := f.cfg
	pr, _ := perRoute.(*PerRoute)
	if pr != nil && pr.Disabled {
		return filters.Continue
	}
	if !c.FilterEnabled.Sample() || (c.EnabledMetadata != nil && !c.EnabledMetadata.Match(x.Info.DynamicMetadata)) {
		f.stats.disabled.Inc()
		if c.DenyAtDisable {
			return x.SendLocalReply(filters.LocalReply{Status: c.StatusOnError, Details: DetailsError}, streaminfo.UnauthorizedExternalService)
		}
		return filters.Continue
	}

	var body []byte
	var withBody, partial bool
	if bs := bodySettings(c, pr); bs != nil && x.Body != nil && !isUpgrade(x.Headers) {
		b, whole, err := x.Body.Peek(bs.MaxBytes)
		if err != nil {
			return x.SendLocalReply(filters.LocalReply{Status: http.StatusBadRequest, Body: "Bad Request", Details: "ext_authz_body_read_failed"}, streaminfo.DownstreamProtocolError)
		}
		if !whole && !bs.AllowPartial {
			// Envoy's buffer limit: the body does not fit and a partial one is not allowed.
			return x.SendLocalReply(filters.LocalReply{Status: http.StatusRequestEntityTooLarge, Body: "Payload Too Large", Details: detailsTooLarge}, 0)
		}
		body, withBody, partial = b, true, !whole
	}

	var cluster string
	var timeout time.Duration
	if c.HTTP != nil {
		cluster, timeout = c.HTTP.Cluster, c.HTTP.Timeout
	} else {
		cluster, timeout = c.GRPC.Cluster, c.GRPC.Timeout
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var resp *response
	var err error
	cl := f.cluster(cluster)
	switch {
	case cl == nil:
		err = errNoCluster
	case c.HTTP != nil:
		resp, err = f.checkHTTP(cctx, cl, x, body, withBody, partial)
	default:
		resp, err = f.checkGRPC(cctx, cl, x, body, withBody, partial, pr)
	}
	if ctx.Err() != nil {
		return filters.Stop // the client went away; the connection manager records it
	}
	if err != nil {
		resp = &response{status: statusError}
	}
	return f.apply(x, resp)
}

var errNoCluster = errors.New("ext_authz: cluster not found")

func bodySettings(c *Config, pr *PerRoute) *BufferSettings {
	bs := c.Body
	if pr != nil {
		if pr.Body != nil {
			bs = pr.Body
		}
		if pr.DisableBody {
			bs = nil
		}
	}
	return bs
}

// isUpgrade: Envoy never buffers the body of a WebSocket or other upgrade.
func isUpgrade(h http.Header) bool { return len(h["Upgrade"]) > 0 }

func (f *Filter) cluster(name string) *upstream.Cluster {
	if f.clusters == nil {
		return nil
	}
	return f.clusters(name)
}

// clusterStats are the route target cluster's ext_authz counters; nil without a cluster.
func (f *Filter) clusterStats(name string) *counters {
	if name == "" {
		return nil
	}
	if c, ok := f.byCluster.Load(name); ok {
		return c.(*counters)
	}
	c, _ := f.byCluster.LoadOrStore(name, newCounters(f.store, "cluster."+name+".ext_authz."+f.cfg.StatPrefix))
	return c.(*counters)
}

// apply acts on the answer as Envoy's Filter::onComplete does.
func (f *Filter) apply(x *filters.Exchange, r *response) filters.Status {
	c := f.cfg
	cs := f.clusterStats(x.Cluster)
	if r.metadata != nil {
		for k, v := range r.metadata.GetFields() {
			x.Info.SetMetadata(Name, k, v)
		}
	}
	switch r.status {
	case statusOK:
		h := x.Headers
		for _, kv := range r.set {
			h[kv[0]] = []string{kv[1]}
		}
		for _, kv := range r.add {
			h[kv[0]] = append(h[kv[0]], kv[1])
		}
		for _, kv := range r.appendTo {
			if vs := h[kv[0]]; len(vs) > 0 {
				h[kv[0]] = []string{strings.Join(vs, ",") + "," + kv[1]}
			}
		}
		for _, kv := range r.addIfAbsent {
			if len(h[kv[0]]) == 0 {
				h[kv[0]] = []string{kv[1]}
			}
		}
		for _, kv := range r.overwriteIfExists {
			if len(h[kv[0]]) > 0 {
				h[kv[0]] = []string{kv[1]}
			}
		}
		for _, k := range r.remove {
			// Pseudo-headers and Host cannot go: the request would be malformed.
			if k != "" && k[0] != ':' && !strings.EqualFold(k, "host") {
				delete(h, http.CanonicalHeaderKey(k))
			}
		}
		for _, kv := range r.clientAdd {
			x.AddResponseHeader(kv[0], kv[1])
		}
		for _, kv := range r.clientSet {
			// The response's own value of a set header is not known yet; adding is the closest.
			x.AddResponseHeader(kv[0], kv[1])
		}
		f.stats.ok.Inc()
		if cs != nil {
			cs.ok.Inc()
		}
		return filters.Continue
	case statusDenied:
		f.stats.denied.Inc()
		if cs != nil {
			cs.denied.Inc()
		}
		return x.SendLocalReply(filters.LocalReply{Status: r.code, Body: r.body, Headers: r.clientHeaders, Details: DetailsDenied}, streaminfo.UnauthorizedExternalService)
	}
	f.stats.failed.Inc()
	if cs != nil {
		cs.failed.Inc()
	}
	if c.FailureModeAllow {
		f.stats.failureModeAllowed.Inc()
		if cs != nil {
			cs.failureModeAllowed.Inc()
		}
		if c.FailureModeAllowHeaderAdd {
			x.Headers[headerFailureModeAllowed] = append(x.Headers[headerFailureModeAllowed], "true")
		}
		return filters.Continue
	}
	reply := filters.LocalReply{Status: c.StatusOnError, Details: DetailsError}
	if r.code != 0 { // a gRPC error_response carries its own answer
		reply.Status, reply.Body, reply.Headers = r.code, r.body, r.clientHeaders
	}
	return x.SendLocalReply(reply, streaminfo.UnauthorizedExternalService)
}
