package stats

import (
	"regexp"
	"slices"
	"strings"
)

// Tag is one dimension Envoy's tag extraction pulls out of a stat name, e.g. envoy.cluster_name.
type Tag struct {
	// Name is Envoy's tag name ("envoy.cluster_name"); Prometheus shows it with dots as underscores.
	Name  string
	Value string
}

// Envoy's well-known tag names (source/common/config/well_known_names.h).
const (
	TagClusterName             = "envoy.cluster_name"
	TagHTTPConnManagerPrefix   = "envoy.http_conn_manager_prefix"
	TagListenerAddress         = "envoy.listener_address"
	TagResponseCode            = "envoy.response_code"
	TagResponseCodeClass       = "envoy.response_code_class"
	TagTCPPrefix               = "envoy.tcp_prefix"
	TagUDPPrefix               = "envoy.udp_prefix"
	TagFaultDownstreamCluster  = "envoy.fault_downstream_cluster"
	TagHTTPUserAgent           = "envoy.http_user_agent"
	TagVirtualHost             = "envoy.virtual_host"
	TagVirtualCluster          = "envoy.virtual_cluster"
	TagRoute                   = "envoy.route"
	TagRDSRouteConfig          = "envoy.rds_route_config"
	TagRatelimitPrefix         = "envoy.ratelimit_prefix"
	TagExtAuthzPrefix          = "envoy.ext_authz_prefix"
	TagLocalHTTPRatelimit      = "envoy.local_http_ratelimit_prefix"
	TagLocalNetworkRatelimit   = "envoy.local_network_ratelimit_prefix"
	TagLocalListenerRatelimit  = "envoy.local_listener_ratelimit_prefix"
	TagDNSFilterPrefix         = "envoy.dns_filter_prefix"
	TagWorkerID                = "envoy.worker_id"
	TagGRPCBridgeService       = "envoy.grpc_bridge_service"
	TagGRPCBridgeMethod        = "envoy.grpc_bridge_method"
	TagClientSSLPrefix         = "envoy.clientssl_prefix"
	TagThriftPrefix            = "envoy.thrift_prefix"
	TagRedisPrefix             = "envoy.redis_prefix"
	tagValue                   = `[^.]+`
	tagAddress                 = `(?:(?:\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}|\[[a-fA-F_\d]+\])_\d+)`
	tagRouteConfigName         = `[\w.-]+`
	tagListenerOrClusterPrefix = `(?:listener|cluster)\..*?`
)

// extractor is one of Envoy's default tag extractors. A regex extractor removes capture group 1 from
// the name and takes group 2 as the value; a tokenized one ("cluster.$.**") matches dot-separated
// tokens, takes the "$" token as the value and removes it with its dot.
type extractor struct {
	tag string
	// substr must occur in the name for the regex to be tried (Envoy's prefilter).
	substr string
	re     *regexp.Regexp
	// notValue is a value the extractor must not take (Envoy's negative match: listener "admin").
	notValue string
	tokens   []string
}

func re(tag, expr, substr string) extractor {
	expr = strings.NewReplacer("<ADDRESS>", tagAddress, "<TAG_VALUE>", tagValue,
		"<ROUTE_CONFIG_NAME>", tagRouteConfigName, "<LISTENER_OR_CLUSTER>", tagListenerOrClusterPrefix).Replace(expr)
	return extractor{tag: tag, substr: substr, re: regexp.MustCompile(expr)}
}

func tokenized(tag, pattern string) extractor {
	return extractor{tag: tag, tokens: strings.Split(pattern, ".")}
}

// defaultExtractors are Envoy's default tag extractors, in Envoy's order
// (source/common/config/well_known_names.cc), less the protocol-specific ones (Mongo, DynamoDB, TLS
// ciphers) trellis-proxy never produces stats for.
var defaultExtractors = func() []extractor {
	l := []extractor{
		re(TagResponseCode, `_rq(_(\d{3}))$`, "_rq_"),
		re(TagResponseCodeClass, `_rq_((\d))xx$`, "_rq_"),
		tokenized(TagGRPCBridgeMethod, "cluster.*.grpc.*.$.**"),
		tokenized(TagHTTPUserAgent, "http.*.user_agent.$.**"),
		tokenized(TagVirtualCluster, "vhost.*.vcluster.$.**"),
		tokenized(TagFaultDownstreamCluster, "http.*.fault.$.**"),
		tokenized(TagGRPCBridgeService, "cluster.*.grpc.$.**"),
		tokenized(TagTCPPrefix, "tcp.$.**"),
		tokenized(TagUDPPrefix, "udp.$.**"),
		tokenized(TagClientSSLPrefix, "auth.clientssl.$.**"),
		tokenized(TagRatelimitPrefix, "ratelimit.$.**"),
		tokenized(TagClusterName, "cluster.$.**"),
		re(TagHTTPConnManagerPrefix, `^listener\..*?\.http\.((<TAG_VALUE>)\.)`, ".http."),
		tokenized(TagExtAuthzPrefix, "cluster.*.ext_authz.$.**"),
		tokenized(TagExtAuthzPrefix, "http.*.ext_authz.$.**"),
		tokenized(TagHTTPConnManagerPrefix, "http.$.**"),
		re(TagWorkerID, `^(?:listener\.(?:<ADDRESS>|<TAG_VALUE>)\.|server\.|listener_manager\.)worker_((\d+)\.)`, ""),
		re(TagListenerAddress, `^listener\.((<ADDRESS>|<TAG_VALUE>)\.)`, ""),
		tokenized(TagVirtualHost, "vhost.$.**"),
		re(TagRDSRouteConfig, `^http\.<TAG_VALUE>\.rds\.((<ROUTE_CONFIG_NAME>)\.)\w+?$`, ".rds."),
		tokenized(TagRoute, "vhost.*.route.$.**"),
		tokenized(TagThriftPrefix, "thrift.$.**"),
		tokenized(TagRedisPrefix, "redis.$.**"),
		tokenized(TagLocalHTTPRatelimit, "$.http_local_rate_limit.**"),
		tokenized(TagLocalNetworkRatelimit, "local_rate_limit.$.**"),
		tokenized(TagLocalListenerRatelimit, "listener_local_ratelimit.$.**"),
		tokenized(TagDNSFilterPrefix, "dns_filter.$.**"),
	}
	for i := range l {
		if l[i].tag == TagListenerAddress {
			l[i].notValue = "admin"
		}
	}
	return l
}()

// span is a byte range [start, end) of the name to remove.
type span struct{ start, end int }

// ExtractTags applies Envoy's default tag extractors to a stat name. It returns the tag-extracted
// name (cluster.upstream_rq_xx for cluster.backend.upstream_rq_2xx) and the tags, sorted by name.
// As in Envoy every extractor sees the original name, what they match is removed at the end, and a
// tag name is taken by the first extractor that finds it.
func ExtractTags(name string) (string, []Tag) {
	var tags []Tag
	var remove []span
	taken := func(tag string) bool {
		return slices.ContainsFunc(tags, func(t Tag) bool { return t.Name == tag })
	}
	for i := range defaultExtractors {
		e := &defaultExtractors[i]
		if taken(e.tag) {
			continue
		}
		var value string
		var cut span
		var ok bool
		if e.re != nil {
			value, cut, ok = e.matchRegex(name)
		} else {
			value, cut, ok = matchTokens(e.tokens, name)
		}
		if !ok || value == e.notValue {
			continue
		}
		tags = append(tags, Tag{Name: e.tag, Value: value})
		remove = append(remove, cut)
	}
	if len(remove) == 0 {
		return name, nil
	}
	slices.SortFunc(tags, func(a, b Tag) int { return strings.Compare(a.Name, b.Name) })
	slices.SortFunc(remove, func(a, b span) int { return a.start - b.start })
	var b strings.Builder
	pos := 0
	for _, r := range remove {
		if r.start > pos {
			b.WriteString(name[pos:r.start])
		}
		pos = max(pos, r.end)
	}
	b.WriteString(name[pos:])
	return b.String(), tags
}

func (e *extractor) matchRegex(name string) (string, span, bool) {
	if e.substr != "" && !strings.Contains(name, e.substr) {
		return "", span{}, false
	}
	m := e.re.FindStringSubmatchIndex(name)
	if m == nil || m[2] < 0 || m[4] < 0 {
		return "", span{}, false
	}
	return name[m[4]:m[5]], span{m[2], m[3]}, true
}

// matchTokens matches name against a tokenized pattern: literal tokens, "*" (any one token), "$"
// (any one token, the value) and "**" (any number of tokens, at least one when last, as Envoy).
func matchTokens(pattern []string, name string) (string, span, bool) {
	var starts []int // byte offset of each token in name
	starts = append(starts, 0)
	for i := 0; i < len(name); i++ {
		if name[i] == '.' {
			starts = append(starts, i+1)
		}
	}
	tokenAt := func(i int) string {
		end := len(name)
		if i+1 < len(starts) {
			end = starts[i+1] - 1
		}
		return name[starts[i]:end]
	}
	n := len(starts)
	value := -1
	var match func(p, t int) bool
	match = func(p, t int) bool {
		if p == len(pattern) {
			return t == n
		}
		switch pattern[p] {
		case "**":
			if p == len(pattern)-1 {
				return t < n
			}
			for k := t; k <= n; k++ {
				if match(p+1, k) {
					return true
				}
			}
			return false
		case "*":
			return t < n && match(p+1, t+1)
		case "$":
			if t < n && match(p+1, t+1) {
				value = t
				return true
			}
			return false
		default:
			return t < n && tokenAt(t) == pattern[p] && match(p+1, t+1)
		}
	}
	if !match(0, 0) || value < 0 {
		return "", span{}, false
	}
	v := tokenAt(value)
	start := starts[value]
	end := start + len(v)
	if end < len(name) {
		end++ // the dot after the value
	} else if start > 0 {
		start-- // the value is last: take the dot before it
	}
	return v, span{start, end}, true
}
