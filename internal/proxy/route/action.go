package route

import (
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/trellis-mesh/trellis/internal/proxy/hashpolicy"
)

// Action is what a matched route does: forward to a cluster, or to one of several by weight; or,
// when Redirect or Direct is set, answer itself.
type Action struct {
	Redirect *Redirect
	Direct   *DirectResponse

	// Cluster is the target when Weighted is empty.
	Cluster string
	// Weighted, when set, replaces Cluster: each request picks one entry with probability
	// weight/total, as Envoy's weighted_clusters do.
	Weighted    []WeightedCluster
	totalWeight uint64

	// ClusterNotFoundCode is the status sent when the chosen cluster does not exist (Envoy's
	// cluster_not_found_response_code); 0 means 503.
	ClusterNotFoundCode int

	// Timeout bounds the whole upstream exchange, retries included; 0 disables it (Envoy's
	// timeout: 0s).
	Timeout time.Duration
	// UseGRPCTimeout makes a gRPC request's grpc-timeout header its timeout instead, capped by
	// GRPCTimeoutMax (0: no cap) and reduced by GRPCTimeoutOffset (Envoy's max_grpc_timeout and
	// max_stream_duration.grpc_timeout_header_max / grpc_timeout_header_offset).
	UseGRPCTimeout                    bool
	GRPCTimeoutMax, GRPCTimeoutOffset time.Duration

	// PrefixRewrite replaces the matched path prefix (prefix and path matches only).
	PrefixRewrite    string
	HasPrefixRewrite bool
	// RegexRewrite, when set, rewrites the path (query excluded) replacing every match of the
	// pattern with RegexSubstitution, in Go's regexp.Expand syntax.
	RegexRewrite      *regexp.Regexp
	RegexSubstitution string

	// HostRewrite, when set, replaces the Host header sent upstream.
	HostRewrite string
	// HostRewriteHeader names a request header whose value, when present, replaces the Host header.
	HostRewriteHeader string
	// HostRewritePathRegex, when set, replaces the Host header with the path (query excluded) after
	// replacing every match with HostRewritePathSubstitution.
	HostRewritePathRegex        *regexp.Regexp
	HostRewritePathSubstitution string

	// Retry is the route's retry_policy, else its virtual host's; nil means no retries.
	Retry *RetryPolicy
	// BufferLimit bounds how much of a request body is kept to replay it on a retry or send it to
	// mirrors (per_request_buffer_limit_bytes); a longer body is not retried.
	BufferLimit int64
	// IncludeAttemptCount sets x-envoy-attempt-count on requests sent upstream, and
	// IncludeAttemptCountInResponse on the response sent downstream.
	IncludeAttemptCount, IncludeAttemptCountInResponse bool

	// Mirrors are the request_mirror_policies.
	Mirrors []Mirror

	// CORS is the deprecated RouteAction.cors policy, parsed by the CORS filter's package; nil when
	// unset. Typed per-filter config takes precedence over it.
	CORS any

	// Upgrades are the route's upgrade_configs: per upgrade type (lower case), enabled or not,
	// overriding the connection manager's for the types it lists.
	Upgrades []Upgrade

	// HashPolicy computes the request hash ring hash and Maglev clusters pick by (hash_policy);
	// nil when the route has none. Its Hash method is nil-safe.
	HashPolicy *hashpolicy.Policy
}

// Upgrade is one of RouteAction.upgrade_configs.
type Upgrade struct {
	Type    string // lower case, e.g. "websocket"
	Enabled bool
}

// UpgradeEnabled reports whether the route enables upgrades to typ, and whether it says anything
// about typ at all.
func (a *Action) UpgradeEnabled(typ string) (enabled, set bool) {
	for _, u := range a.Upgrades {
		if strings.EqualFold(u.Type, typ) {
			return u.Enabled, true
		}
	}
	return false, false
}

// WeightedCluster is one target of a weighted split.
type WeightedCluster struct {
	Name   string
	Weight uint32
	// HostRewrite, when set, replaces the Host header for requests sent to this cluster.
	HostRewrite string

	RequestHeaders  HeaderMutation
	ResponseHeaders HeaderMutation
	FilterConfigs   FilterConfigs
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
	if a.Redirect != nil || a.Direct != nil {
		return nil
	}
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
