package route

import (
	"regexp"
	"strconv"
	"strings"

	"github.com/trellis-mesh/trellis/internal/proxy/reqparse"
)

// PathKind says how Match.Path is compared with the request path.
type PathKind int

const (
	// PathPrefix matches paths starting with Path.
	PathPrefix PathKind = iota
	// PathExact matches the path equal to Path.
	PathExact
	// PathRegex matches paths the whole of which Regex matches.
	PathRegex
	// PathSeparatedPrefix matches Path itself or Path followed by "/...".
	PathSeparatedPrefix
)

// Match is a route's condition. Paths are compared without the query string, as Envoy does.
type Match struct {
	Kind PathKind
	Path string
	// Regex is anchored at both ends (Envoy's safe_regex must match the whole path).
	Regex *regexp.Regexp
	// CaseInsensitive is Envoy's case_sensitive=false; it applies to prefix and exact paths only.
	CaseInsensitive bool

	Headers []HeaderMatcher
	Query   []QueryMatcher
}

func (m *Match) matches(req *Request, path string) bool {
	switch m.Kind {
	case PathPrefix:
		if !hasPrefix(path, m.Path, m.CaseInsensitive) {
			return false
		}
	case PathExact:
		if len(path) != len(m.Path) || !hasPrefix(path, m.Path, m.CaseInsensitive) {
			return false
		}
	case PathSeparatedPrefix:
		if !hasPrefix(path, m.Path, m.CaseInsensitive) || (len(path) > len(m.Path) && path[len(m.Path)] != '/') {
			return false
		}
	case PathRegex:
		if !m.Regex.MatchString(path) {
			return false
		}
	default:
		return false
	}
	for i := range m.Headers {
		if !m.Headers[i].Matches(req.Headers) {
			return false
		}
	}
	if len(m.Query) > 0 {
		q := queryOf(req.Path)
		for i := range m.Query {
			if !m.Query[i].matches(q) {
				return false
			}
		}
	}
	return true
}

// matchedPrefixLen is how much of the path prefix_rewrite replaces.
func (m *Match) matchedPrefixLen() int { return len(m.Path) }

func hasPrefix(s, prefix string, fold bool) bool {
	if len(s) < len(prefix) {
		return false
	}
	if fold {
		return strings.EqualFold(s[:len(prefix)], prefix)
	}
	return s[:len(prefix)] == prefix
}

// StringKind is the comparison a StringMatcher makes.
type StringKind int

// The comparisons of Envoy's StringMatcher.
const (
	StringExact StringKind = iota
	StringPrefix
	StringSuffix
	StringContains
	StringRegex
)

// StringMatcher is Envoy's type.matcher.v3.StringMatcher.
type StringMatcher struct {
	Kind  StringKind
	Value string
	// Regex is anchored at both ends, as Envoy's safe_regex matches whole strings.
	Regex      *regexp.Regexp
	IgnoreCase bool
}

// Match reports whether s satisfies the matcher.
func (m *StringMatcher) Match(s string) bool {
	switch m.Kind {
	case StringExact:
		if m.IgnoreCase {
			return strings.EqualFold(s, m.Value)
		}
		return s == m.Value
	case StringPrefix:
		return hasPrefix(s, m.Value, m.IgnoreCase)
	case StringSuffix:
		if len(s) < len(m.Value) {
			return false
		}
		if m.IgnoreCase {
			return strings.EqualFold(s[len(s)-len(m.Value):], m.Value)
		}
		return strings.HasSuffix(s, m.Value)
	case StringContains:
		if m.IgnoreCase {
			return strings.Contains(strings.ToLower(s), strings.ToLower(m.Value))
		}
		return strings.Contains(s, m.Value)
	case StringRegex:
		return m.Regex.MatchString(s)
	}
	return false
}

// HeaderKind is the test a HeaderMatcher applies.
type HeaderKind int

const (
	// HeaderPresent tests presence (or, with Present false, absence).
	HeaderPresent HeaderKind = iota
	// HeaderString compares the value with String.
	HeaderString
	// HeaderRange parses the value as an integer in [RangeStart, RangeEnd).
	HeaderRange
)

// HeaderMatcher is Envoy's route.v3.HeaderMatcher.
type HeaderMatcher struct {
	// Name is in the form HeaderGetter expects: canonical MIME form, or ":name" for pseudo-headers.
	Name    string
	Kind    HeaderKind
	Present bool // for HeaderPresent
	String  StringMatcher
	// RangeStart is inclusive, RangeEnd exclusive.
	RangeStart, RangeEnd int64
	// EmptyMatchesAny keeps the deprecated exact_match "" meaning "any value".
	EmptyMatchesAny bool

	Invert              bool
	TreatMissingAsEmpty bool
}

// Matches applies Envoy's HeaderUtility::matchHeaders semantics, including how invert_match treats
// a missing header: only a presence test can match one.
func (h *HeaderMatcher) Matches(headers HeaderGetter) bool {
	value, ok := "", false
	if headers != nil {
		value, ok = headers.Get(h.Name)
	}
	if !ok && !h.TreatMissingAsEmpty {
		if h.Invert {
			return h.Kind == HeaderPresent && h.Present
		}
		return h.Kind == HeaderPresent && !h.Present
	}
	var match bool
	switch h.Kind {
	case HeaderPresent:
		match = h.Present
	case HeaderString:
		match = (h.EmptyMatchesAny && h.String.Value == "") || h.String.Match(value)
	case HeaderRange:
		n, err := strconv.ParseInt(value, 10, 64)
		match = err == nil && n >= h.RangeStart && n < h.RangeEnd
	}
	return match != h.Invert
}

// QueryMatcher is Envoy's route.v3.QueryParameterMatcher: the first value of the parameter is tested.
type QueryMatcher struct {
	Name string
	// String is nil for a presence test.
	String *StringMatcher
}

func (q *QueryMatcher) matches(rawQuery string) bool {
	v, ok := reqparse.QueryValue(rawQuery, q.Name)
	if !ok || q.String == nil {
		return ok
	}
	return q.String.Match(v)
}
