package rbac

import (
	"strings"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/trellis-mesh/trellis/internal/proxy/stats"
	"github.com/trellis-mesh/trellis/internal/proxy/streaminfo"
)

// rules are an enforced engine and a shadow engine with their stat prefixes; either engine may be
// nil.
type rules struct {
	engine, shadow            *Engine
	rulesPrefix, shadowPrefix string
}

func (r *rules) needs() needs {
	var n needs
	if r.engine != nil {
		n |= r.engine.needs
	}
	if r.shadow != nil {
		n |= r.shadow.needs
	}
	return n
}

// The dynamic metadata Envoy's RBAC filters write: shadow results under the filter's name (with
// the shadow_rules_stat_prefix before each key), and a LOG engine's hint under envoy.common.
const (
	keyShadowPolicy  = "shadow_effective_policy_id"
	keyShadowResult  = "shadow_engine_result"
	commonNamespace  = "envoy.common"
	keyAccessLogHint = "access_log_hint"
)

// Shared metadata values; never modified, so one of each serves every request.
var (
	valueAllowed = structpb.NewStringValue("allowed")
	valueDenied  = structpb.NewStringValue("denied")
	valueTrue    = structpb.NewBoolValue(true)
	valueFalse   = structpb.NewBoolValue(false)
)

// recordShadow writes a shadow decision to info's dynamic metadata under namespace, with the
// keys prefixed by prefix.
func recordShadow(info *streaminfo.Info, namespace string, keys *shadowKeys, d Decision) {
	if d.matched != nil {
		info.SetMetadata(namespace, keys.policy, d.matched.nameValue)
	}
	v := valueAllowed
	if !d.Allowed {
		v = valueDenied
	}
	info.SetMetadata(namespace, keys.result, v)
}

// recordLogHint sets envoy.common's access_log_hint, as Envoy does for a LOG engine.
func recordLogHint(info *streaminfo.Info, d Decision) {
	v := valueFalse
	if d.Matched {
		v = valueTrue
	}
	info.SetMetadata(commonNamespace, keyAccessLogHint, v)
}

// shadowKeys are the metadata keys of the shadow results, prefix included, made once.
type shadowKeys struct{ policy, result string }

func newShadowKeys(prefix string) shadowKeys {
	return shadowKeys{policy: prefix + keyShadowPolicy, result: prefix + keyShadowResult}
}

// counters are Envoy's RBAC stats: <prefix>rbac.<rules_stat_prefix>{allowed,denied} and, after
// the shadow_rules_stat_prefix, shadow_allowed and shadow_denied.
type counters struct {
	allowed, denied, shadowAllowed, shadowDenied *stats.Counter
}

func newCounters(store *stats.Store, prefix, rulesPrefix, shadowPrefix string) counters {
	if store == nil {
		return counters{}
	}
	enforced := statPrefixJoin(statPrefixJoin(prefix, "rbac."), rulesPrefix)
	shadow := statPrefixJoin(enforced, shadowPrefix)
	return counters{
		allowed:       store.Counter(enforced + "allowed"),
		denied:        store.Counter(enforced + "denied"),
		shadowAllowed: store.Counter(shadow + "shadow_allowed"),
		shadowDenied:  store.Counter(shadow + "shadow_denied"),
	}
}

func (c *counters) count(d Decision, shadow bool) {
	switch {
	case shadow && d.Allowed:
		c.shadowAllowed.Inc()
	case shadow:
		c.shadowDenied.Inc()
	case d.Allowed:
		c.allowed.Inc()
	default:
		c.denied.Inc()
	}
}

// statPrefixJoin is Envoy's: the token after the prefix, with a "." between them unless the prefix
// already ends with one.
func statPrefixJoin(prefix, token string) string {
	switch {
	case prefix == "":
		return token
	case strings.HasSuffix(prefix, "."):
		return prefix + token
	}
	return prefix + "." + token
}
