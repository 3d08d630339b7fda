package stats

import (
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// PrometheusContentType is the text exposition format's content type, as Envoy serves it.
const PrometheusContentType = "text/plain; version=0.0.4; charset=utf-8"

// WritePrometheus writes the metrics matching filter (all when nil; only used ones when usedOnly) in
// the Prometheus text exposition format, the way Envoy's /stats/prometheus does: Envoy's default
// tags become labels (cluster.backend.upstream_rq_2xx is
// envoy_cluster_upstream_rq_xx{envoy_cluster_name="backend",envoy_response_code_class="2"}), names
// get the envoy_ prefix with every character outside [a-zA-Z0-9_] made '_', and each family has a
// # TYPE line. Families are sorted by name, samples by labels.
func (s *Store) WritePrometheus(w io.Writer, filter *regexp.Regexp, usedOnly bool) error {
	type sample struct {
		labels string
		value  int64
	}
	type family struct {
		counter bool
		samples []sample
	}
	families := map[string]*family{}
	for _, st := range s.Snapshot(filter) {
		if usedOnly && !st.Used {
			continue
		}
		extracted, tags := s.tags(st.Name)
		name := PrometheusName(extracted)
		f := families[name]
		if f == nil {
			f = &family{counter: st.Counter}
			families[name] = f
		}
		f.samples = append(f.samples, sample{labels: promLabels(tags), value: st.Value})
	}
	names := make([]string, 0, len(families))
	for n := range families {
		names = append(names, n)
	}
	slices.Sort(names)
	var buf []byte
	for _, n := range names {
		f := families[n]
		kind := "gauge"
		if f.counter {
			kind = "counter"
		}
		buf = append(buf, "# TYPE "...)
		buf = append(buf, n...)
		buf = append(buf, ' ')
		buf = append(buf, kind...)
		buf = append(buf, '\n')
		slices.SortFunc(f.samples, func(a, b sample) int { return strings.Compare(a.labels, b.labels) })
		for _, smp := range f.samples {
			buf = append(buf, n...)
			buf = append(buf, smp.labels...)
			buf = append(buf, ' ')
			buf = strconv.AppendInt(buf, smp.value, 10)
			buf = append(buf, '\n')
		}
	}
	if _, err := w.Write(buf); err != nil {
		return fmt.Errorf("write prometheus stats: %w", err)
	}
	return nil
}

// tags memoizes ExtractTags: stat names are few and fixed, scrapes are many.
func (s *Store) tags(name string) (string, []Tag) {
	s.tagMu.Lock()
	defer s.tagMu.Unlock()
	if s.tagCache == nil {
		s.tagCache = make(map[string]extracted)
	}
	if e, ok := s.tagCache[name]; ok {
		return e.name, e.tags
	}
	n, t := ExtractTags(name)
	s.tagCache[name] = extracted{n, t}
	return n, t
}

type extracted struct {
	name string
	tags []Tag
}

// PrometheusName is Envoy's Prometheus metric name for a tag-extracted stat name: "envoy_" and the
// name with every character outside [a-zA-Z0-9_] replaced by '_'.
func PrometheusName(extracted string) string {
	return "envoy_" + sanitize(extracted)
}

func sanitize(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			b[i] = '_'
		}
	}
	return string(b)
}

// promLabels renders tags as {name="value",...}, values escaped as the exposition format requires
// (backslash, double quote, newline); "" when there are none.
func promLabels(tags []Tag) string {
	if len(tags) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteByte('{')
	for i, t := range tags {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(sanitize(t.Name))
		b.WriteString(`="`)
		for _, c := range []byte(t.Value) {
			switch c {
			case '\\':
				b.WriteString(`\\`)
			case '"':
				b.WriteString(`\"`)
			case '\n':
				b.WriteString(`\n`)
			default:
				b.WriteByte(c)
			}
		}
		b.WriteByte('"')
	}
	b.WriteByte('}')
	return b.String()
}
