package filters

import (
	"errors"
	"fmt"

	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/trellis-mesh/trellis/internal/proxy/route"
)

// MetadataMatcher is Envoy's envoy.type.matcher.v3.MetadataMatcher over a request's dynamic
// metadata: the value at Path in the Filter namespace must match (or, with Invert, not match).
// RBAC rules match JWT claims with it, and Istio gates its CUSTOM action with one: ext_authz runs
// only when the RBAC shadow engine set shadow_effective_policy_id to an "istio-ext-authz" policy.
type MetadataMatcher struct {
	Filter string
	Path   []string
	Value  *ValueMatcher
	Invert bool
}

// ValueMatcher is envoy.type.matcher.v3.ValueMatcher; exactly one kind is set.
type ValueMatcher struct {
	kind    valueKind
	str     route.StringMatcher
	boolean bool
	// double: exact, or start <= x < end
	exact, start, end float64
	ranged            bool
	present           bool
	oneOf             *ValueMatcher
	or                []*ValueMatcher
}

type valueKind uint8

const (
	valueNull valueKind = iota + 1
	valueDouble
	valueString
	valueBool
	valuePresent
	valueList
	valueOr
)

// NewMetadataMatcher converts m, with conv's string matchers; errors read field.path: reason.
func NewMetadataMatcher(m *matcherv3.MetadataMatcher, conv Converters) (*MetadataMatcher, error) {
	if err := OnlyFields(m, "filter", "path", "value", "invert"); err != nil {
		return nil, err
	}
	if m.GetFilter() == "" {
		return nil, errors.New("filter: required")
	}
	out := &MetadataMatcher{Filter: m.GetFilter(), Invert: m.GetInvert()}
	for i, seg := range m.GetPath() {
		if seg.GetKey() == "" {
			return nil, fmt.Errorf("path[%d].key: required", i)
		}
		out.Path = append(out.Path, seg.GetKey())
	}
	if len(out.Path) == 0 {
		return nil, errors.New("path: at least one segment is required")
	}
	v, err := newValueMatcher(m.GetValue(), conv)
	if err != nil {
		return nil, fmt.Errorf("value.%w", err)
	}
	out.Value = v
	return out, nil
}

func newValueMatcher(v *matcherv3.ValueMatcher, conv Converters) (*ValueMatcher, error) {
	out := &ValueMatcher{}
	switch p := v.GetMatchPattern().(type) {
	case *matcherv3.ValueMatcher_NullMatch_:
		out.kind = valueNull
	case *matcherv3.ValueMatcher_DoubleMatch:
		out.kind = valueDouble
		switch d := p.DoubleMatch.GetMatchPattern().(type) {
		case *matcherv3.DoubleMatcher_Exact:
			out.exact = d.Exact
		case *matcherv3.DoubleMatcher_Range:
			out.ranged, out.start, out.end = true, d.Range.GetStart(), d.Range.GetEnd()
		default:
			return nil, errors.New("double_match: range or exact is required")
		}
	case *matcherv3.ValueMatcher_StringMatch:
		sm, err := conv.StringMatcher(p.StringMatch)
		if err != nil {
			return nil, fmt.Errorf("string_match: %w", err)
		}
		out.kind, out.str = valueString, sm
	case *matcherv3.ValueMatcher_BoolMatch:
		out.kind, out.boolean = valueBool, p.BoolMatch
	case *matcherv3.ValueMatcher_PresentMatch:
		out.kind, out.present = valuePresent, p.PresentMatch
	case *matcherv3.ValueMatcher_ListMatch:
		one, err := newValueMatcher(p.ListMatch.GetOneOf(), conv)
		if err != nil {
			return nil, fmt.Errorf("list_match.one_of.%w", err)
		}
		out.kind, out.oneOf = valueList, one
	case *matcherv3.ValueMatcher_OrMatch:
		out.kind = valueOr
		for i, vm := range p.OrMatch.GetValueMatchers() {
			m, err := newValueMatcher(vm, conv)
			if err != nil {
				return nil, fmt.Errorf("or_match.value_matchers[%d].%w", i, err)
			}
			out.or = append(out.or, m)
		}
	default:
		return nil, errors.New("match_pattern: one is required")
	}
	return out, nil
}

// Match looks the value up in md (filter namespace → fields) and matches it. A missing value
// matches nothing but an inverted matcher, as in Envoy.
func (m *MetadataMatcher) Match(md map[string]*structpb.Struct) bool {
	var v *structpb.Value
	if s := md[m.Filter]; s != nil {
		v = s.GetFields()[m.Path[0]]
		for _, key := range m.Path[1:] {
			v = v.GetStructValue().GetFields()[key]
		}
	}
	return m.Value.Match(v) != m.Invert
}

// Match reports whether v (nil when absent) matches.
func (m *ValueMatcher) Match(v *structpb.Value) bool {
	if v == nil || v.GetKind() == nil {
		return false
	}
	switch m.kind {
	case valueNull:
		_, ok := v.GetKind().(*structpb.Value_NullValue)
		return ok
	case valueDouble:
		n, ok := v.GetKind().(*structpb.Value_NumberValue)
		if !ok {
			return false
		}
		if m.ranged {
			return m.start <= n.NumberValue && n.NumberValue < m.end
		}
		return n.NumberValue == m.exact
	case valueString:
		s, ok := v.GetKind().(*structpb.Value_StringValue)
		return ok && m.str.Match(s.StringValue)
	case valueBool:
		b, ok := v.GetKind().(*structpb.Value_BoolValue)
		return ok && b.BoolValue == m.boolean
	case valuePresent:
		return m.present
	case valueList:
		l, ok := v.GetKind().(*structpb.Value_ListValue)
		if !ok {
			return false
		}
		for _, e := range l.ListValue.GetValues() {
			if m.oneOf.Match(e) {
				return true
			}
		}
		return false
	case valueOr:
		for _, o := range m.or {
			if o.Match(v) {
				return true
			}
		}
	}
	return false
}
