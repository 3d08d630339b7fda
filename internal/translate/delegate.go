package translate

import (
	"google.golang.org/protobuf/proto"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/trellis-mesh/trellis/internal/model"
)

// foldDelegates replaces each http entry with a delegate by the delegate
// VirtualService's http entries, as Istio does: one level only (an entry
// of the delegate that delegates again is dropped), the delegate must have
// no hosts and be exported to the root's namespace, each delegate match is
// ANDed with the root's (combinations that cannot both hold are dropped),
// and what the delegate entry leaves unset (rewrite, timeout, retries,
// fault, mirror, corsPolicy, headers) is taken from the root entry. A
// root entry whose delegate does not exist routes nowhere and is dropped.
// Delegates themselves, having no hosts, route nothing on their own.
func foldDelegates(full *model.Snapshot) []*model.VirtualService {
	all := full.Config.VirtualServices
	byName := make(map[string]*model.VirtualService, len(all))
	for _, vs := range all {
		byName[vs.Namespace+"/"+vs.Name] = vs
	}
	out := make([]*model.VirtualService, 0, len(all))
	for _, vs := range all {
		if len(vs.Spec.GetHosts()) == 0 || !hasDelegate(vs) {
			out = append(out, vs)
			continue
		}
		root := cloneVS(vs)
		var http []*networking.HTTPRoute
		for _, h := range root.Spec.GetHttp() {
			d := h.GetDelegate()
			if d == nil {
				http = append(http, h)
				continue
			}
			ns := d.GetNamespace()
			if ns == "" {
				ns = vs.Namespace
			}
			dvs := byName[ns+"/"+d.GetName()]
			if dvs == nil || len(dvs.Spec.GetHosts()) > 0 || !model.Exported(full.VirtualServiceExportTo(dvs), dvs.Namespace, vs.Namespace) {
				continue
			}
			for _, dh := range dvs.Spec.GetHttp() {
				if dh.GetDelegate() != nil {
					continue
				}
				if merged := mergeDelegateRoute(h, dh, dvs.Namespace); merged != nil {
					http = append(http, merged)
				}
			}
		}
		root.Spec.Http = http
		out = append(out, root)
	}
	return out
}

func hasDelegate(vs *model.VirtualService) bool {
	for _, h := range vs.Spec.GetHttp() {
		if h.GetDelegate() != nil {
			return true
		}
	}
	return false
}

// mergeDelegateRoute is delegate entry dh under root entry h, or nil when
// no combination of their matches can hold. Short destination hosts are
// qualified with the delegate's namespace, which is where Istio resolves
// them, before the entry moves into the root.
func mergeDelegateRoute(h, dh *networking.HTTPRoute, delegateNS string) *networking.HTTPRoute {
	out := proto.Clone(dh).(*networking.HTTPRoute)
	matches, ok := mergeMatches(h.GetMatch(), dh.GetMatch())
	if !ok {
		return nil
	}
	out.Match = matches
	switch {
	case out.Name == "":
		out.Name = h.GetName()
	case h.GetName() != "":
		out.Name = h.GetName() + "-" + out.Name
	}
	if out.Rewrite == nil {
		out.Rewrite = h.GetRewrite()
	}
	if out.Timeout == nil {
		out.Timeout = h.GetTimeout()
	}
	if out.Retries == nil {
		out.Retries = h.GetRetries()
	}
	if out.Fault == nil {
		out.Fault = h.GetFault()
	}
	if out.Mirror == nil && len(out.Mirrors) == 0 {
		out.Mirror, out.Mirrors = h.GetMirror(), h.GetMirrors()
	}
	if out.CorsPolicy == nil {
		out.CorsPolicy = h.GetCorsPolicy()
	}
	if out.Headers == nil {
		out.Headers = h.GetHeaders()
	}
	qualify := func(d *networking.Destination) {
		if d != nil {
			d.Host = model.ResolveHost(d.GetHost(), delegateNS)
		}
	}
	for _, r := range out.Route {
		qualify(r.GetDestination())
	}
	if out.Mirror != nil && out.Mirror != h.GetMirror() {
		qualify(out.Mirror)
	}
	return out
}

// mergeMatches ANDs every root match with every delegate match. With no
// root matches the delegate's stand; with no delegate matches the root's.
// ok is false when matches existed on both sides but none combine.
func mergeMatches(root, delegate []*networking.HTTPMatchRequest) ([]*networking.HTTPMatchRequest, bool) {
	if len(root) == 0 {
		return delegate, true
	}
	if len(delegate) == 0 {
		return root, true
	}
	var out []*networking.HTTPMatchRequest
	for _, r := range root {
		for _, d := range delegate {
			if m := mergeMatch(r, d); m != nil {
				out = append(out, m)
			}
		}
	}
	return out, len(out) > 0
}

// mergeMatch is r ∧ d, or nil on a conflict: a uri the delegate narrows
// must stay under the root's prefix; any other field set on both sides
// must be equal; header, query and label conditions are united.
func mergeMatch(r, d *networking.HTTPMatchRequest) *networking.HTTPMatchRequest {
	m := proto.Clone(d).(*networking.HTTPMatchRequest)
	var ok bool
	if m.Uri, ok = mergeURI(r.GetUri(), d.GetUri()); !ok {
		return nil
	}
	for _, f := range []struct {
		dst  **networking.StringMatch
		root *networking.StringMatch
	}{{&m.Scheme, r.GetScheme()}, {&m.Method, r.GetMethod()}, {&m.Authority, r.GetAuthority()}} {
		if *f.dst == nil {
			*f.dst = f.root
		} else if f.root != nil && !proto.Equal(*f.dst, f.root) {
			return nil
		}
	}
	if r.GetPort() != 0 {
		if m.Port != 0 && m.Port != r.GetPort() {
			return nil
		}
		m.Port = r.GetPort()
	}
	if m.Headers, ok = unionStringMatches(r.GetHeaders(), m.Headers); !ok {
		return nil
	}
	if m.QueryParams, ok = unionStringMatches(r.GetQueryParams(), m.QueryParams); !ok {
		return nil
	}
	if m.WithoutHeaders, ok = unionStringMatches(r.GetWithoutHeaders(), m.WithoutHeaders); !ok {
		return nil
	}
	for k, v := range r.GetSourceLabels() {
		if got, set := m.SourceLabels[k]; set && got != v {
			return nil
		}
		if m.SourceLabels == nil {
			m.SourceLabels = map[string]string{}
		}
		m.SourceLabels[k] = v
	}
	if len(m.Gateways) == 0 {
		m.Gateways = r.GetGateways()
	}
	if m.SourceNamespace == "" {
		m.SourceNamespace = r.GetSourceNamespace()
	} else if r.GetSourceNamespace() != "" && r.GetSourceNamespace() != m.SourceNamespace {
		return nil
	}
	if m.Name == "" {
		m.Name = r.GetName()
	}
	return m
}

// mergeURI: the delegate's uri must be within the root's (a root prefix
// that the delegate's prefix or exact path starts with), or equal to it.
func mergeURI(root, d *networking.StringMatch) (*networking.StringMatch, bool) {
	switch {
	case root == nil:
		return d, true
	case d == nil:
		return root, true
	case proto.Equal(root, d):
		return d, true
	}
	rp, isPrefix := root.GetMatchType().(*networking.StringMatch_Prefix)
	if !isPrefix {
		return nil, false
	}
	var dp string
	switch t := d.GetMatchType().(type) {
	case *networking.StringMatch_Prefix:
		dp = t.Prefix
	case *networking.StringMatch_Exact:
		dp = t.Exact
	default:
		return nil, false
	}
	if len(dp) < len(rp.Prefix) || dp[:len(rp.Prefix)] != rp.Prefix {
		return nil, false
	}
	return d, true
}

func unionStringMatches(root, d map[string]*networking.StringMatch) (map[string]*networking.StringMatch, bool) {
	if len(root) == 0 {
		return d, true
	}
	out := make(map[string]*networking.StringMatch, len(root)+len(d))
	for k, v := range d {
		out[k] = v
	}
	for k, v := range root {
		if got, set := out[k]; set && !proto.Equal(got, v) {
			return nil, false
		}
		out[k] = v
	}
	return out, true
}
