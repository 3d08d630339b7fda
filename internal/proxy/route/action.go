package route

import (
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/trellis-mesh/trellis/internal/proxy/hashpolicy"
)

// Action is what a matched route does: forward to a cluster, or to one of several by weight.
type Action struct {
	// Cluster is the target when Weighted is empty.
	Cluster string
	// Weighted, when set, replaces Cluster: each request picks one entry with probability
	// weight/total, as Envoy's weighted_clusters do.
	Weighted    []WeightedCluster
	totalWeight uint64

	// ClusterNotFoundCode is the status sent when the chosen cluster does not exist (Envoy's
	// cluster_not_found_response_code); 0 means 503.
	ClusterNotFoundCode int

	// Timeout bounds the whole upstream exchange; 0 disables it (Envoy's timeout: 0s).
	Timeout time.Duration

	// PrefixRewrite replaces the matched path prefix (prefix and path matches only).
	PrefixRewrite    string
	HasPrefixRewrite bool
	// RegexRewrite, when set, rewrites the path (query excluded) replacing every match of the
	// pattern with RegexSubstitution, in Go's regexp.Expand syntax.
	RegexRewrite      *regexp.Regexp
	RegexSubstitution string

	// HostRewrite, when set, replaces the Host header sent upstream.
	HostRewrite string

	// HashPolicy computes the request hash ring hash and Maglev clusters pick by (hash_policy);
	// nil when the route has none. Its Hash method is nil-safe.
	HashPolicy *hashpolicy.Policy
}

// WeightedCluster is one target of a weighted split.
type WeightedCluster struct {
	Name   string
	Weight uint32
	// HostRewrite, when set, replaces the Host header for requests sent to this cluster.
	HostRewrite string

	RequestHeaders  HeaderMutation
	ResponseHeaders HeaderMutation
}

// SetWeighted installs a weighted split; the total must be positive.
func (a *Action) SetWeighted(clusters []WeightedCluster) error {
	var total uint64
	for _, c := range clusters {
		total += uint64(c.Weight)
	}
	if total == 0 {
		return fmt.Errorf("weighted_clusters: the weights add up to 0")
	}
	a.Weighted = clusters
	a.totalWeight = total
	return nil
}

// Pick returns the target for a request, given a uniformly random value (Envoy draws one per
// request too). The returned pointer is nil unless the route is a weighted split.
func (a *Action) Pick(random uint64) (cluster string, wc *WeightedCluster) {
	if len(a.Weighted) == 0 {
		return a.Cluster, nil
	}
	r := random % a.totalWeight
	for i := range a.Weighted {
		w := uint64(a.Weighted[i].Weight)
		if r < w {
			return a.Weighted[i].Name, &a.Weighted[i]
		}
		r -= w
	}
	last := &a.Weighted[len(a.Weighted)-1]
	return last.Name, last
}

// Clusters lists every cluster name the action can send to.
func (a *Action) Clusters() []string {
	if len(a.Weighted) == 0 {
		return []string{a.Cluster}
	}
	names := make([]string, len(a.Weighted))
	for i, w := range a.Weighted {
		names[i] = w.Name
	}
	return names
}

// RewritePath returns the path to send upstream for a request path (query included) this route
// matched, and whether it differs from the original.
func (r *Route) RewritePath(path string) (string, bool) {
	a := &r.Action
	if !a.HasPrefixRewrite && a.RegexRewrite == nil {
		return path, false
	}
	p, rest := path, ""
	if i := strings.IndexAny(path, "?#"); i >= 0 {
		p, rest = path[:i], path[i:]
	}
	if a.HasPrefixRewrite {
		n := r.Match.matchedPrefixLen()
		if n > len(p) {
			n = len(p)
		}
		p = a.PrefixRewrite + p[n:]
	} else {
		p = a.RegexRewrite.ReplaceAllString(p, a.RegexSubstitution)
	}
	return p + rest, true
}

// EnvoySubstitution converts an Envoy (RE2) regex substitution, where \1 names a capture group, into
// the $-syntax of Go's regexp.Expand, escaping literal dollars.
func EnvoySubstitution(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '$':
			b.WriteString("$$")
		case c == '\\' && i+1 < len(s) && s[i+1] >= '0' && s[i+1] <= '9':
			b.WriteString("${")
			b.WriteByte(s[i+1])
			b.WriteByte('}')
			i++
		case c == '\\' && i+1 < len(s) && s[i+1] == '\\':
			b.WriteByte('\\')
			i++
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}
