package rbac

import (
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/trellis-mesh/trellis/internal/proxy/route"
)

// metadataMatcher is Envoy's MetadataMatcher over the request's dynamic metadata: the value at
// filter/path (nil when any step is missing or not a struct) is tested by value, then inverted.
type metadataMatcher struct {
	filter string
	path   []string
	value  valueMatcher
	invert bool
}

func (m *metadataMatcher) match(r *Request) bool {
	return m.value.matchValue(lookup(r.Metadata, m.filter, m.path)) != m.invert
}

func lookup(md map[string]*structpb.Struct, filter string, path []string) *structpb.Value {
	s := md[filter]
	for i, key := range path {
		if s == nil {
			return nil
		}
		v := s.GetFields()[key]
		if i == len(path)-1 {
			return v
		}
		s = v.GetStructValue()
	}
	return nil
}

// valueMatcher is Envoy's ValueMatcher. A nil value is a missing one (Envoy's KIND_NOT_SET).
type valueMatcher interface {
	matchValue(v *structpb.Value) bool
}

type nullValueMatcher struct{}

func (nullValueMatcher) matchValue(v *structpb.Value) bool {
	_, ok := v.GetKind().(*structpb.Value_NullValue)
	return ok
}

// doubleValueMatcher matches a number exactly, or within [start, end).
type doubleValueMatcher struct {
	exact      bool
	value      float64
	start, end float64
}

func (m *doubleValueMatcher) matchValue(v *structpb.Value) bool {
	n, ok := v.GetKind().(*structpb.Value_NumberValue)
	if !ok {
		return false
	}
	if m.exact {
		return n.NumberValue == m.value
	}
	return m.start <= n.NumberValue && n.NumberValue < m.end
}

type stringValueMatcher struct{ s route.StringMatcher }

func (m *stringValueMatcher) matchValue(v *structpb.Value) bool {
	s, ok := v.GetKind().(*structpb.Value_StringValue)
	return ok && m.s.Match(s.StringValue)
}

type boolValueMatcher struct{ b bool }

func (m boolValueMatcher) matchValue(v *structpb.Value) bool {
	b, ok := v.GetKind().(*structpb.Value_BoolValue)
	return ok && b.BoolValue == m.b
}

// presentValueMatcher with present false never matches, as Envoy's.
type presentValueMatcher struct{ present bool }

func (m presentValueMatcher) matchValue(v *structpb.Value) bool {
	return m.present && v.GetKind() != nil
}

// listValueMatcher is list_match.one_of: some element of a list value matches.
type listValueMatcher struct{ oneOf valueMatcher }

func (m *listValueMatcher) matchValue(v *structpb.Value) bool {
	l, ok := v.GetKind().(*structpb.Value_ListValue)
	if !ok {
		return false
	}
	for _, e := range l.ListValue.GetValues() {
		if m.oneOf.matchValue(e) {
			return true
		}
	}
	return false
}

type orValueMatcher []valueMatcher

func (m orValueMatcher) matchValue(v *structpb.Value) bool {
	for _, s := range m {
		if s.matchValue(v) {
			return true
		}
	}
	return false
}
