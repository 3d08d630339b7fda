package config

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// fieldErr is one problem at a field path of a document.
type fieldErr struct {
	path   string
	line   int
	reason string
}

const (
	// maxDepth bounds recursion; Istio resources nest a dozen levels at most.
	maxDepth = 100
	// maxNodes bounds the YAML nodes visited per document, so that aliases
	// expanding to millions of nodes ("billion laughs") fail fast.
	maxNodes = 1 << 18
	// maxErrors bounds the problems reported per document: past that, the
	// file is likely not what the user meant to load at all.
	maxErrors = 50
)

// converter turns a yaml.v3 node tree into the JSON form Istio's jsonpb
// unmarshalers accept, guided by the target message's descriptor. Doing it
// by schema, rather than converting YAML to JSON blindly, is what lets every
// unknown field, wrong type and conflicting oneof be reported with its field
// path and line, which protojson's own errors lack.
type converter struct {
	lines     map[string]int // field path → line, for errors found later
	errs      []fieldErr
	visited   int
	exhausted bool
}

func newConverter() *converter { return &converter{lines: map[string]int{}} }

func (c *converter) fail(path string, line int, format string, args ...any) {
	if c.exhausted {
		return
	}
	if len(c.errs) == maxErrors {
		c.exhausted = true
		c.errs = append(c.errs, fieldErr{path: path, line: line, reason: "too many errors; stopped reading this document"})
		return
	}
	c.errs = append(c.errs, fieldErr{path: path, line: line, reason: fmt.Sprintf(format, args...)})
}

// visit resolves aliases and charges the node budget; nil means stop.
func (c *converter) visit(n *yaml.Node, path string, depth int) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode; i++ {
		if i > maxDepth {
			c.fail(path, n.Line, "alias chain too long")
			return nil
		}
		n = n.Alias
	}
	if n == nil || c.exhausted {
		return nil
	}
	c.visited++
	if c.visited > maxNodes || depth > maxDepth {
		c.fail(path, n.Line, "document too large or too deeply nested (recursive YAML aliases?)")
		c.exhausted = true
		return nil
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	return strconv.Quote(n.Value)
}

type pair struct {
	key   string
	line  int
	value *yaml.Node
}

// pairs lists a mapping's entries, expanding YAML merge keys (<<) with
// explicit keys taking precedence, and reports duplicate keys.
func (c *converter) pairs(n *yaml.Node, path string, depth int) []pair {
	var own, merged []pair
	first := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := c.visit(n.Content[i], path, depth+1)
		if k == nil {
			return nil
		}
		if k.Kind != yaml.ScalarNode {
			c.fail(path, k.Line, "mapping keys must be strings, got %s", describe(k))
			continue
		}
		v := n.Content[i+1]
		if k.ShortTag() == "!!merge" {
			merged = append(merged, c.mergeSource(v, path, depth+1)...)
			continue
		}
		if line, dup := first[k.Value]; dup {
			c.fail(joinPath(path, k.Value), k.Line, "duplicate key (first at line %d)", line)
			continue
		}
		first[k.Value] = k.Line
		own = append(own, pair{key: k.Value, line: k.Line, value: v})
	}
	for _, p := range merged {
		if _, dup := first[p.key]; !dup {
			first[p.key] = p.line
			own = append(own, p)
		}
	}
	return own
}

func (c *converter) mergeSource(v *yaml.Node, path string, depth int) []pair {
	v = c.visit(v, path, depth)
	if v == nil {
		return nil
	}
	switch v.Kind {
	case yaml.MappingNode:
		return c.pairs(v, path, depth)
	case yaml.SequenceNode:
		var out []pair
		for _, e := range v.Content {
			out = append(out, c.mergeSource(e, path, depth+1)...)
		}
		return out
	}
	c.fail(path, v.Line, "merge key (<<) needs a mapping or a list of mappings, got %s", describe(v))
	return nil
}

func joinPath(path, field string) string {
	if path == "" {
		return field
	}
	return path + "." + field
}

// message converts a mapping into the JSON object for md. ok is false when
// nothing should be emitted (null, or an error was recorded).
func (c *converter) message(md protoreflect.MessageDescriptor, n *yaml.Node, path string, depth int) (any, bool) {
	n = c.visit(n, path, depth)
	if n == nil || isNull(n) {
		return nil, false
	}
	if v, ok, handled := c.wellKnown(md, n, path, depth); handled {
		return v, ok
	}
	if n.Kind != yaml.MappingNode {
		c.fail(path, n.Line, "must be a mapping, got %s", describe(n))
		return nil, false
	}
	out := map[string]any{}
	oneofs := map[protoreflect.FullName]string{}
	fields := md.Fields()
	for _, p := range c.pairs(n, path, depth) {
		fd := fields.ByJSONName(p.key)
		if fd == nil {
			fd = fields.ByName(protoreflect.Name(p.key))
		}
		if fd == nil {
			c.fail(joinPath(path, p.key), p.line, "unknown field%s", suggest(p.key, fieldNames(md)))
			continue
		}
		fpath := joinPath(path, fd.JSONName())
		c.lines[fpath] = p.line
		v, ok := c.field(fd, p.value, fpath, depth+1)
		if !ok {
			continue
		}
		if od := fd.ContainingOneof(); od != nil && !od.IsSynthetic() {
			if prev, set := oneofs[od.FullName()]; set {
				c.fail(path, p.line, "set only one of %s; got %s and %s", oneofNames(od), prev, fd.JSONName())
				continue
			}
			oneofs[od.FullName()] = fd.JSONName()
		}
		out[fd.JSONName()] = v
	}
	return out, true
}

func fieldNames(md protoreflect.MessageDescriptor) []string {
	fields := md.Fields()
	names := make([]string, fields.Len())
	for i := range names {
		names[i] = fields.Get(i).JSONName()
	}
	return names
}

func oneofNames(od protoreflect.OneofDescriptor) string {
	fields := od.Fields()
	names := make([]string, fields.Len())
	for i := range names {
		names[i] = fields.Get(i).JSONName()
	}
	return strings.Join(names, ", ")
}

// wellKnown handles the google.protobuf types whose JSON form is not an
// object of their fields.
func (c *converter) wellKnown(md protoreflect.MessageDescriptor, n *yaml.Node, path string, depth int) (any, bool, bool) {
	switch md.FullName() {
	case "google.protobuf.Duration":
		s, ok := c.scalarString(n, path, "a duration such as 5s or 100ms")
		if !ok {
			return nil, false, true
		}
		// Istio's jsonpb parses durations with time.ParseDuration, so "1m"
		// and "100ms" are valid, unlike in plain protojson.
		if _, err := time.ParseDuration(s); err != nil {
			c.fail(path, n.Line, "invalid duration %q: want e.g. 5s, 100ms, 1m", s)
			return nil, false, true
		}
		return s, true, true
	case "google.protobuf.Timestamp":
		s, ok := c.scalarString(n, path, "an RFC 3339 timestamp")
		if !ok {
			return nil, false, true
		}
		if _, err := time.Parse(time.RFC3339Nano, s); err != nil {
			c.fail(path, n.Line, "invalid timestamp %q: want RFC 3339", s)
			return nil, false, true
		}
		return s, true, true
	case "google.protobuf.BoolValue", "google.protobuf.StringValue", "google.protobuf.BytesValue",
		"google.protobuf.Int32Value", "google.protobuf.UInt32Value", "google.protobuf.Int64Value",
		"google.protobuf.UInt64Value", "google.protobuf.FloatValue", "google.protobuf.DoubleValue":
		v, ok := c.single(md.Fields().ByName("value"), n, path, depth)
		return v, ok, true
	case "google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue",
		"google.protobuf.Any", "google.protobuf.Empty":
		v, ok := c.generic(n, path, depth)
		return v, ok, true
	}
	return nil, false, false
}

func (c *converter) scalarString(n *yaml.Node, path, want string) (string, bool) {
	if n.Kind != yaml.ScalarNode {
		c.fail(path, n.Line, "must be %s, got %s", want, describe(n))
		return "", false
	}
	return n.Value, true
}

// field converts the value of one field: a list, a map or a single value.
func (c *converter) field(fd protoreflect.FieldDescriptor, n *yaml.Node, path string, depth int) (any, bool) {
	n = c.visit(n, path, depth)
	if n == nil || isNull(n) {
		return nil, false
	}
	switch {
	case fd.IsList():
		if n.Kind != yaml.SequenceNode {
			c.fail(path, n.Line, "must be a list, got %s", describe(n))
			return nil, false
		}
		out := make([]any, 0, len(n.Content))
		for i, e := range n.Content {
			epath := fmt.Sprintf("%s[%d]", path, i)
			c.lines[epath] = e.Line
			if ee := c.visit(e, epath, depth+1); ee != nil && isNull(ee) {
				c.fail(epath, e.Line, "list entries must not be null")
				continue
			}
			if v, ok := c.single(fd, e, epath, depth+1); ok {
				out = append(out, v)
			}
		}
		return out, true
	case fd.IsMap():
		if n.Kind != yaml.MappingNode {
			c.fail(path, n.Line, "must be a mapping, got %s", describe(n))
			return nil, false
		}
		out := map[string]any{}
		for _, p := range c.pairs(n, path, depth) {
			epath := fmt.Sprintf("%s[%s]", path, p.key)
			c.lines[epath] = p.line
			if fd.MapKey().Kind() != protoreflect.StringKind {
				if _, ok := c.number(fd.MapKey(), &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!int", Value: p.key, Line: p.line}, epath); !ok {
					continue
				}
			}
			if v, ok := c.single(fd.MapValue(), p.value, epath, depth+1); ok {
				out[p.key] = v
			}
		}
		return out, true
	}
	return c.single(fd, n, path, depth)
}

// single converts one value of fd's type.
func (c *converter) single(fd protoreflect.FieldDescriptor, n *yaml.Node, path string, depth int) (any, bool) {
	if fd.Kind() == protoreflect.MessageKind || fd.Kind() == protoreflect.GroupKind {
		return c.message(fd.Message(), n, path, depth)
	}
	n = c.visit(n, path, depth)
	if n == nil || isNull(n) {
		return nil, false
	}
	if n.Kind != yaml.ScalarNode {
		c.fail(path, n.Line, "must be a %s, got %s", kindWord(fd), describe(n))
		return nil, false
	}
	switch fd.Kind() {
	case protoreflect.StringKind, protoreflect.BytesKind:
		// Any scalar is accepted as a string (version: 1.10 stays "1.10"),
		// which is friendlier than rejecting unquoted numbers.
		return n.Value, true
	case protoreflect.BoolKind:
		if n.ShortTag() == "!!bool" {
			if b, err := strconv.ParseBool(n.Value); err == nil {
				return b, true
			}
		}
		c.fail(path, n.Line, "must be true or false, got %q", n.Value)
		return nil, false
	case protoreflect.EnumKind:
		return c.enum(fd.Enum(), n, path)
	}
	return c.number(fd, n, path)
}

func kindWord(fd protoreflect.FieldDescriptor) string {
	switch fd.Kind() {
	case protoreflect.StringKind, protoreflect.BytesKind:
		return "string"
	case protoreflect.BoolKind:
		return "boolean"
	case protoreflect.EnumKind:
		return "string"
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		return "number"
	}
	return "integer"
}

func (c *converter) enum(ed protoreflect.EnumDescriptor, n *yaml.Node, path string) (any, bool) {
	if n.ShortTag() == "!!int" {
		if v, err := strconv.ParseInt(n.Value, 10, 32); err == nil && ed.Values().ByNumber(protoreflect.EnumNumber(v)) != nil {
			return v, true
		}
	}
	if ed.Values().ByName(protoreflect.Name(n.Value)) != nil {
		return n.Value, true
	}
	values := ed.Values()
	names := make([]string, values.Len())
	for i := range names {
		names[i] = string(values.Get(i).Name())
	}
	c.fail(path, n.Line, "unknown value %q; want one of %s", n.Value, strings.Join(names, ", "))
	return nil, false
}

func (c *converter) number(fd protoreflect.FieldDescriptor, n *yaml.Node, path string) (any, bool) {
	s := n.Value
	switch tag := n.ShortTag(); {
	case tag == "!!int" || tag == "!!float" || tag == "!!str":
	default:
		c.fail(path, n.Line, "must be a %s, got %q", kindWord(fd), s)
		return nil, false
	}
	bits := 64
	switch fd.Kind() {
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind,
		protoreflect.Uint32Kind, protoreflect.Fixed32Kind, protoreflect.FloatKind:
		bits = 32
	}
	switch fd.Kind() {
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		switch strings.ToLower(s) {
		case ".inf", "+.inf":
			return "Infinity", true
		case "-.inf":
			return "-Infinity", true
		case ".nan":
			return "NaN", true
		}
		f, err := strconv.ParseFloat(s, bits)
		if err != nil || math.IsInf(f, 0) {
			c.fail(path, n.Line, "must be a number, got %q", s)
			return nil, false
		}
		return f, true
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind, protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		if strings.HasPrefix(s, "-") {
			c.fail(path, n.Line, "must not be negative, got %s", s)
			return nil, false
		}
		v, err := strconv.ParseUint(s, intBase(s), bits)
		if err != nil {
			c.fail(path, n.Line, "%s", numErr(err, s, bits, "an unsigned integer"))
			return nil, false
		}
		return v, true
	}
	v, err := strconv.ParseInt(s, intBase(s), bits)
	if err != nil {
		c.fail(path, n.Line, "%s", numErr(err, s, bits, "an integer"))
		return nil, false
	}
	return v, true
}

// intBase is 10 unless s has a 0x, 0o or 0b prefix: a leading zero alone
// does not make a port number octal.
func intBase(s string) int {
	t := strings.ToLower(strings.TrimLeft(s, "+-"))
	if strings.HasPrefix(t, "0x") || strings.HasPrefix(t, "0o") || strings.HasPrefix(t, "0b") {
		return 0
	}
	return 10
}

func numErr(err error, s string, bits int, want string) string {
	if ne, ok := err.(*strconv.NumError); ok && ne.Err == strconv.ErrRange {
		return fmt.Sprintf("%s is out of range for a %d-bit integer", s, bits)
	}
	return fmt.Sprintf("must be %s, got %q", want, s)
}

// generic converts free-form YAML (google.protobuf.Struct and friends) by
// its own tags.
func (c *converter) generic(n *yaml.Node, path string, depth int) (any, bool) {
	n = c.visit(n, path, depth)
	if n == nil {
		return nil, false
	}
	switch n.Kind {
	case yaml.MappingNode:
		out := map[string]any{}
		for _, p := range c.pairs(n, path, depth) {
			if v, ok := c.generic(p.value, joinPath(path, p.key), depth+1); ok {
				out[p.key] = v
			}
		}
		return out, true
	case yaml.SequenceNode:
		out := make([]any, 0, len(n.Content))
		for i, e := range n.Content {
			if v, ok := c.generic(e, fmt.Sprintf("%s[%d]", path, i), depth+1); ok {
				out = append(out, v)
			}
		}
		return out, true
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!null":
			return nil, true
		case "!!bool":
			if b, err := strconv.ParseBool(n.Value); err == nil {
				return b, true
			}
		case "!!int":
			if v, err := strconv.ParseInt(n.Value, 0, 64); err == nil {
				return v, true
			}
		case "!!float":
			if f, err := strconv.ParseFloat(n.Value, 64); err == nil && !math.IsInf(f, 0) && !math.IsNaN(f) {
				return f, true
			}
		}
		return n.Value, true
	}
	c.fail(path, n.Line, "unsupported YAML node")
	return nil, false
}

// suggest returns "; did you mean X?" when a known name is close to got.
func suggest(got string, known []string) string {
	best, bestDist := "", 3
	for _, k := range known {
		if strings.EqualFold(k, got) {
			return fmt.Sprintf("; did you mean %s?", k)
		}
		if d := editDistance(strings.ToLower(got), strings.ToLower(k)); d < bestDist {
			best, bestDist = k, d
		}
	}
	if best == "" || bestDist*3 > len(got) {
		return ""
	}
	return fmt.Sprintf("; did you mean %s?", best)
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
