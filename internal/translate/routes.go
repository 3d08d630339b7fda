package translate

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/trellis-mesh/trellis/internal/model"
)

// A VirtualService http entry becomes one Envoy route per applicable match
// block: a route action (destinations, rewrite, retries, mirrors, timeout,
// the consistent-hash policy of the destination's DestinationRule), a
// redirect or a direct response, plus per-route fault and CORS configs for
// the filters every HTTP connection manager carries. delegate entries are
// skipped (delegation is not supported); match.statPrefix is ignored.
//
// Header operations on pseudo-headers (other than setting host or
// :authority, which rewrites the authority as in Istio) are errors, since
// Envoy would reject them.

// meshGateway is the reserved gateway name meaning "all sidecars".
const meshGateway = "mesh"

// routeScope is where routes are being placed. Istio drops match blocks
// scoped elsewhere: to another port, gateway, source workload or namespace.
type routeScope struct {
	port      uint32          // port of the virtual host being built
	gateways  map[string]bool // "mesh" for sidecars; "ns/name" of the Gateway otherwise
	labels    map[string]string
	namespace string
}

func (e *env) scope(port uint32, gateways ...string) routeScope {
	s := routeScope{port: port, gateways: map[string]bool{}, labels: e.labels, namespace: e.proxy.Namespace}
	for _, g := range gateways {
		s.gateways[g] = true
	}
	return s
}

// defaultRoute sends everything to the service port's cluster: what a
// virtual host gets when no VirtualService names its host.
func defaultRoute(cluster string) *routev3.Route {
	return &routev3.Route{
		Name:  "default",
		Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{
			ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster},
			Timeout:          durationpb.New(0),
		}},
	}
}

// defaultOutboundRoute is Istio's BuildDefaultHTTPOutboundRoute: the
// default route plus the mesh's default retry policy and, when the
// service's DestinationRule hashes, its hash policy.
func (e *env) defaultOutboundRoute(svc *model.Service, port uint32) *routev3.Route {
	r := defaultRoute(OutboundClusterName(port, "", svc.Hostname))
	a := r.GetRoute()
	hp := e.hashPolicy(svc.Hostname, "", port)
	if hp != nil {
		a.HashPolicy = []*routev3.RouteAction_HashPolicy{hp}
	}
	a.RetryPolicy = retryPolicy(e.snap.Config.Mesh.GetDefaultHttpRetryPolicy(), hp != nil)
	return r
}

// virtualServiceRoutes translates vs's http entries, in order, into routes
// for a virtual host in scope: one route per applicable match block, or a
// catch-all "/" route for an entry with no match.
func (e *env) virtualServiceRoutes(vs *model.VirtualService, scope routeScope) ([]*routev3.Route, error) {
	var out []*routev3.Route
	for i, h := range vs.Spec.GetHttp() {
		path := fmt.Sprintf("%s (%s): http[%d]", vs.Key(), vs.Source, i)
		if h.GetDelegate() != nil || (len(h.GetRoute()) == 0 && h.GetRedirect() == nil && h.GetDirectResponse() == nil) {
			continue // delegation is not supported
		}
		matches, ok := applicableMatches(h.GetMatch(), vs.Namespace, scope)
		if !ok {
			continue
		}
		for _, m := range matches {
			rm, err := TranslateMatch(m.match)
			if err != nil {
				return nil, fmt.Errorf("%s.match[%d]: %w", path, m.index, err)
			}
			r := &routev3.Route{Name: routeName(h.GetName(), m.match.GetName()), Match: rm}
			if err := e.setRouteAction(r, h, vs.Namespace, scope.port, path); err != nil {
				return nil, err
			}
			out = append(out, r)
			if isCatchAll(rm) {
				// Nothing after a route matching every request can match;
				// Istio stops here too.
				return out, nil
			}
		}
	}
	return out, nil
}

// isCatchAll is Istio's IsCatchAllRoute: prefix "/" (or regex ".*") with
// no header or query parameter conditions.
func isCatchAll(m *routev3.RouteMatch) bool {
	if len(m.GetHeaders()) > 0 || len(m.GetQueryParameters()) > 0 {
		return false
	}
	switch p := m.GetPathSpecifier().(type) {
	case *routev3.RouteMatch_Prefix:
		return p.Prefix == "/"
	case *routev3.RouteMatch_SafeRegex:
		return p.SafeRegex.GetRegex() == ".*"
	}
	return false
}

type indexedMatch struct {
	index int
	match *networking.HTTPMatchRequest // nil: match everything
}

// applicableMatches keeps the match blocks that apply in scope. ok is false
// when the entry had match blocks and none applies: the entry is skipped.
func applicableMatches(ms []*networking.HTTPMatchRequest, vsNamespace string, scope routeScope) (out []indexedMatch, ok bool) {
	if len(ms) == 0 {
		return []indexedMatch{{index: -1}}, true
	}
	for j, m := range ms {
		if m.GetPort() != 0 && m.GetPort() != scope.port {
			continue
		}
		if len(m.GetSourceLabels()) > 0 && !model.LabelsMatch(m.GetSourceLabels(), scope.labels) {
			continue
		}
		if m.GetSourceNamespace() != "" && m.GetSourceNamespace() != scope.namespace {
			continue
		}
		if len(m.GetGateways()) > 0 && !anyGateway(m.GetGateways(), vsNamespace, scope.gateways) {
			continue
		}
		out = append(out, indexedMatch{index: j, match: m})
	}
	return out, len(out) > 0
}

// anyGateway reports whether one of names (VirtualService gateway
// references: "mesh", "ns/name", or "name" in the VirtualService's own
// namespace) is in want.
func anyGateway(names []string, vsNamespace string, want map[string]bool) bool {
	for _, g := range names {
		if want[qualifyGateway(g, vsNamespace)] {
			return true
		}
	}
	return false
}

func qualifyGateway(name, vsNamespace string) string {
	if name == meshGateway || strings.Contains(name, "/") {
		return name
	}
	return vsNamespace + "/" + name
}

func routeName(httpName, matchName string) string {
	switch {
	case httpName != "" && matchName != "":
		return httpName + "." + matchName
	case httpName != "":
		return httpName
	}
	return matchName
}

// setRouteAction fills r's action from the entry: a redirect, a direct
// response, or destinations with their timeout, rewrite, retries and
// mirrors; then the header operations and the per-route fault and CORS
// configs, which apply whatever the action. Destinations whose service or
// subset does not exist still name their cluster, as in Istio: the route
// then fails with 503 at request time rather than rejecting the whole
// configuration.
func (e *env) setRouteAction(r *routev3.Route, h *networking.HTTPRoute, vsNamespace string, port uint32, path string) error {
	ops, err := translateHeaders(h.GetHeaders(), path+".headers")
	if err != nil {
		return err
	}
	switch {
	case h.GetRedirect() != nil:
		rd, err := redirectAction(h.GetRedirect(), port)
		if err != nil {
			return fmt.Errorf("%s.redirect.%w", path, err)
		}
		r.Action = &routev3.Route_Redirect{Redirect: rd}
	case h.GetDirectResponse() != nil:
		r.Action = &routev3.Route_DirectResponse{DirectResponse: directResponseAction(h.GetDirectResponse())}
	default:
		if ops, err = e.forwardAction(r, h, ops, vsNamespace, port, path); err != nil {
			return err
		}
	}
	r.RequestHeadersToAdd = ops.requestAdd
	r.RequestHeadersToRemove = ops.requestRemove
	r.ResponseHeadersToAdd = ops.responseAdd
	r.ResponseHeadersToRemove = ops.responseRemove

	if f := h.GetFault(); f != nil {
		cfg, err := faultConfig(f)
		if err != nil {
			return fmt.Errorf("%s.fault.%w", path, err)
		}
		if cfg != nil {
			r.TypedPerFilterConfig = map[string]*anypb.Any{faultFilterName: cfg}
		}
	}
	if c := h.GetCorsPolicy(); c != nil {
		cfg, err := corsConfig(c)
		if err != nil {
			return fmt.Errorf("%s.corsPolicy.%w", path, err)
		}
		if r.TypedPerFilterConfig == nil {
			r.TypedPerFilterConfig = map[string]*anypb.Any{}
		}
		r.TypedPerFilterConfig[corsFilterName] = cfg
	}
	return nil
}

// forwardAction sets r's route action: destinations (one cluster or a
// weighted split), timeout, rewrite, mirrors, retries and the hash policy
// of each destination's DestinationRule (Istio puts it on the route). It
// returns the route's header operations, with a lone destination's folded
// in as Istio does.
func (e *env) forwardAction(r *routev3.Route, h *networking.HTTPRoute, ops headerOps, vsNamespace string, port uint32, path string) (headerOps, error) {
	action := &routev3.RouteAction{
		// Istio disables Envoy's 15s default: no timeout unless asked.
		Timeout: durationpb.New(0),
	}
	if t := h.GetTimeout(); t != nil {
		if err := t.CheckValid(); err != nil || t.AsDuration() < 0 {
			return ops, fmt.Errorf("%s.timeout: want a non-negative duration", path)
		}
		action.Timeout = durationpb.New(t.AsDuration())
	}
	if authority := applyRewrite(action, h.GetRewrite()); authority != "" {
		ops.hostRewrite = authority // rewrite.authority wins over a header set, as in Istio
	}

	type dest struct {
		cluster string
		weight  uint32
		ops     headerOps
	}
	var dests []dest
	for k, d := range h.GetRoute() {
		dpath := fmt.Sprintf("%s.route[%d]", path, k)
		if d.GetWeight() < 0 {
			return ops, fmt.Errorf("%s.weight: %d: must not be negative", dpath, d.GetWeight())
		}
		w := uint32(d.GetWeight())
		if len(h.GetRoute()) == 1 {
			w = 100 // a lone destination takes all traffic, weight or not
		}
		if w == 0 {
			continue // Istio drops zero-weight destinations of a split
		}
		cluster, err := e.destinationCluster(d.GetDestination(), vsNamespace, port)
		if err != nil {
			return ops, fmt.Errorf("%s.destination: %w", dpath, err)
		}
		dops, err := translateHeaders(d.GetHeaders(), dpath+".headers")
		if err != nil {
			return ops, err
		}
		dests = append(dests, dest{cluster: cluster, weight: w, ops: dops})
		host := model.ResolveHost(d.GetDestination().GetHost(), vsNamespace)
		hp := e.hashPolicy(host, d.GetDestination().GetSubset(), e.destinationPort(d.GetDestination(), host, port))
		// Destinations of one split often share a DestinationRule, and
		// so its hash; once is enough.
		if hp != nil && !slices.ContainsFunc(action.HashPolicy, func(p *routev3.RouteAction_HashPolicy) bool { return proto.Equal(p, hp) }) {
			action.HashPolicy = append(action.HashPolicy, hp)
		}
	}
	switch len(dests) {
	case 0:
		return ops, fmt.Errorf("%s.route: every destination has weight 0", path)
	case 1:
		// Istio folds a single destination's header operations into the
		// route; its authority only when the route set none.
		action.ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: dests[0].cluster}
		d := dests[0].ops
		if ops.hostRewrite != "" {
			d.hostRewrite = ""
		}
		ops = ops.merge(d)
	default:
		wc := &routev3.WeightedCluster{}
		for _, d := range dests {
			cw := &routev3.WeightedCluster_ClusterWeight{
				Name:                    d.cluster,
				Weight:                  wrapperspb.UInt32(d.weight),
				RequestHeadersToAdd:     d.ops.requestAdd,
				RequestHeadersToRemove:  d.ops.requestRemove,
				ResponseHeadersToAdd:    d.ops.responseAdd,
				ResponseHeadersToRemove: d.ops.responseRemove,
			}
			if d.ops.hostRewrite != "" {
				cw.HostRewriteSpecifier = &routev3.WeightedCluster_ClusterWeight_HostRewriteLiteral{HostRewriteLiteral: d.ops.hostRewrite}
			}
			wc.Clusters = append(wc.Clusters, cw)
		}
		action.ClusterSpecifier = &routev3.RouteAction_WeightedClusters{WeightedClusters: wc}
	}
	if ops.hostRewrite != "" {
		action.HostRewriteSpecifier = &routev3.RouteAction_HostRewriteLiteral{HostRewriteLiteral: ops.hostRewrite}
	}
	mirrors, err := e.mirrorPolicies(h, vsNamespace, port, path)
	if err != nil {
		return ops, err
	}
	action.RequestMirrorPolicies = mirrors
	retries := h.GetRetries()
	if retries == nil {
		retries = e.snap.Config.Mesh.GetDefaultHttpRetryPolicy()
	}
	// Istio looks only at a lone destination for whether the route hashes.
	action.RetryPolicy = retryPolicy(retries, len(h.GetRoute()) == 1 && len(action.HashPolicy) > 0)
	r.Action = &routev3.Route_Route{Route: action}
	return ops, nil
}

// destinationCluster names the cluster for a route destination.
func (e *env) destinationCluster(d *networking.Destination, vsNamespace string, vhostPort uint32) (string, error) {
	if d.GetHost() == "" {
		return "", errors.New("host: must not be empty")
	}
	host := model.ResolveHost(d.GetHost(), vsNamespace)
	return OutboundClusterName(e.destinationPort(d, host, vhostPort), d.GetSubset(), host), nil
}

// destinationPort is the service port a destination goes to. Without an
// explicit port it picks, as Istio: the virtual host's port when the
// service has it, else the service's only port, else the virtual host's
// port anyway.
func (e *env) destinationPort(d *networking.Destination, host string, vhostPort uint32) uint32 {
	if p := d.GetPort().GetNumber(); p != 0 {
		return p
	}
	if svc := e.snap.Service(host); svc != nil && svc.Port(vhostPort) == nil && len(svc.Ports) == 1 {
		return svc.Ports[0].Number
	}
	return vhostPort
}

// headerOps are the header manipulations of one route or destination.
type headerOps struct {
	requestAdd     []*corev3.HeaderValueOption
	requestRemove  []string
	responseAdd    []*corev3.HeaderValueOption
	responseRemove []string
	hostRewrite    string // request set/add of host or :authority
}

func (o headerOps) merge(p headerOps) headerOps {
	o.requestAdd = append(o.requestAdd, p.requestAdd...)
	o.requestRemove = append(o.requestRemove, p.requestRemove...)
	o.responseAdd = append(o.responseAdd, p.responseAdd...)
	o.responseRemove = append(o.responseRemove, p.responseRemove...)
	if p.hostRewrite != "" {
		o.hostRewrite = p.hostRewrite
	}
	return o
}

// translateHeaders maps Istio's set/add/remove to Envoy header options.
// Setting the request host is Istio's way to rewrite the authority, so it
// becomes host_rewrite_literal; other pseudo-headers are rejected, as Envoy
// would reject them.
func translateHeaders(h *networking.Headers, path string) (headerOps, error) {
	var ops headerOps
	if h == nil {
		return ops, nil
	}
	sides := []struct {
		field  string
		hops   *networking.Headers_HeaderOperations
		add    *[]*corev3.HeaderValueOption
		remove *[]string
	}{
		{"request", h.GetRequest(), &ops.requestAdd, &ops.requestRemove},
		{"response", h.GetResponse(), &ops.responseAdd, &ops.responseRemove},
	}
	for _, side := range sides {
		for _, op := range []struct {
			field  string
			values map[string]string
			action corev3.HeaderValueOption_HeaderAppendAction
		}{
			{"set", side.hops.GetSet(), corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD},
			{"add", side.hops.GetAdd(), corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD},
		} {
			for _, name := range sortedKeys(op.values) {
				fpath := fmt.Sprintf("%s.%s.%s[%s]", path, side.field, op.field, name)
				if side.field == "request" && isAuthority(name) {
					ops.hostRewrite = op.values[name]
					continue
				}
				if err := checkHeaderName(name); err != nil {
					return ops, fmt.Errorf("%s: %w", fpath, err)
				}
				*side.add = append(*side.add, &corev3.HeaderValueOption{
					Header:       &corev3.HeaderValue{Key: name, Value: op.values[name]},
					AppendAction: op.action,
				})
			}
		}
		for k, name := range side.hops.GetRemove() {
			if err := checkHeaderName(name); err != nil || isAuthority(name) {
				return ops, fmt.Errorf("%s.%s.remove[%d]: header %q cannot be removed", path, side.field, k, name)
			}
			*side.remove = append(*side.remove, name)
		}
	}
	return ops, nil
}

func isAuthority(name string) bool {
	n := strings.ToLower(name)
	return n == "host" || n == ":authority"
}

func checkHeaderName(name string) error {
	switch {
	case name == "":
		return errors.New("header name: must not be empty")
	case strings.HasPrefix(name, ":"), strings.EqualFold(name, "host"):
		return fmt.Errorf("header %q cannot be modified", name)
	}
	return nil
}

// hostMatches reports whether pattern covers host. pattern is an exact
// name, "*", or "*.suffix"; host may itself be a wildcard, which pattern
// covers when its suffix is at least as specific.
func hostMatches(pattern, host string) bool {
	switch {
	case pattern == "*":
		return true
	case strings.HasPrefix(pattern, "*."):
		return strings.HasSuffix(host, pattern[1:]) && host != "*"
	}
	return pattern == host
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// sortedKeysFold orders header names as Envoy sees them: case-insensitively.
func sortedKeysFold[V any](m map[string]V) []string {
	keys := sortedKeys(m)
	sort.SliceStable(keys, func(i, j int) bool { return strings.ToLower(keys[i]) < strings.ToLower(keys[j]) })
	return keys
}
