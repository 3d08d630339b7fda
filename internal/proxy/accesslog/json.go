package accesslog

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/trellis-mesh/trellis/internal/proxy/streaminfo"
)

// jsonNode is one compiled value of a JSON format (Envoy's JsonFormatBuilder): a constant already
// serialized, a template of segments, an object or a list. Keys are sorted, as in Envoy, so lines
// are deterministic.
type jsonNode struct {
	constant string // serialized JSON; used when template, fields and items are all nil
	template []segment
	isTmpl   bool
	fields   []jsonField
	isObject bool
	items    []jsonNode
	isList   bool
}

type jsonField struct {
	key string // serialized: "name":
	val jsonNode
}

// jsonFormat renders a line as one JSON object and a newline. typed keeps a lone operator's type
// (numbers as numbers, a missing value as null); untyped (FileAccessLog's deprecated json_format)
// renders every template as a string.
type jsonFormat struct {
	root      jsonNode
	typed     bool
	omitEmpty bool
}

func compileJSON(s *structpb.Struct, typed, omitEmpty bool, field string) (*jsonFormat, error) {
	root, err := compileJSONObject(s.GetFields(), field)
	if err != nil {
		return nil, err
	}
	return &jsonFormat{root: root, typed: typed, omitEmpty: omitEmpty}, nil
}

func compileJSONObject(fields map[string]*structpb.Value, field string) (jsonNode, error) {
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	n := jsonNode{isObject: true}
	for _, k := range keys {
		v, keep, err := compileJSONValue(fields[k], field+"."+k)
		if err != nil {
			return jsonNode{}, err
		}
		if !keep {
			continue // a literal null is dropped, as Envoy does
		}
		key := appendJSONString(nil, k)
		n.fields = append(n.fields, jsonField{key: string(append(key, ':')), val: v})
	}
	return n, nil
}

func compileJSONValue(v *structpb.Value, field string) (jsonNode, bool, error) {
	switch k := v.GetKind().(type) {
	case *structpb.Value_NumberValue:
		f := k.NumberValue
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return jsonNode{constant: "null"}, true, nil
		}
		return jsonNode{constant: strconv.FormatFloat(f, 'g', -1, 64)}, true, nil
	case *structpb.Value_BoolValue:
		return jsonNode{constant: strconv.FormatBool(k.BoolValue)}, true, nil
	case *structpb.Value_StringValue:
		if !strings.Contains(k.StringValue, "%") {
			return jsonNode{constant: string(appendJSONString(nil, k.StringValue))}, true, nil
		}
		segs, err := parseFormat(k.StringValue)
		if err != nil {
			return jsonNode{}, false, fmt.Errorf("%s: %w", field, err)
		}
		return jsonNode{template: segs, isTmpl: true}, true, nil
	case *structpb.Value_StructValue:
		n, err := compileJSONObject(k.StructValue.GetFields(), field)
		return n, true, err
	case *structpb.Value_ListValue:
		n := jsonNode{isList: true}
		for i, item := range k.ListValue.GetValues() {
			c, keep, err := compileJSONValue(item, fmt.Sprintf("%s[%d]", field, i))
			if err != nil {
				return jsonNode{}, false, err
			}
			if keep {
				n.items = append(n.items, c)
			}
		}
		return n, true, nil
	}
	return jsonNode{}, false, nil // null or unset
}

func (f *jsonFormat) append(dst, scratch []byte, info *streaminfo.Info) ([]byte, []byte) {
	start := len(dst)
	var ok bool
	dst, scratch, ok = f.appendNode(dst, scratch, &f.root, info)
	if !ok {
		dst = append(dst[:start], "{}"...)
	}
	return append(dst, '\n'), scratch
}

// appendNode renders n; ok false means it was omitted (omit_empty_values) and dst is unchanged.
func (f *jsonFormat) appendNode(dst, scratch []byte, n *jsonNode, info *streaminfo.Info) ([]byte, []byte, bool) {
	switch {
	case n.isObject:
		start := len(dst)
		dst = append(dst, '{')
		empty := true
		for i := range n.fields {
			fs := len(dst)
			if !empty {
				dst = append(dst, ',')
			}
			dst = append(dst, n.fields[i].key...)
			var ok bool
			dst, scratch, ok = f.appendNode(dst, scratch, &n.fields[i].val, info)
			if !ok {
				dst = dst[:fs]
				continue
			}
			empty = false
		}
		if empty && f.omitEmpty {
			return dst[:start], scratch, false
		}
		return append(dst, '}'), scratch, true
	case n.isList:
		dst = append(dst, '[')
		empty := true
		for i := range n.items {
			es := len(dst)
			if !empty {
				dst = append(dst, ',')
			}
			var ok bool
			dst, scratch, ok = f.appendNode(dst, scratch, &n.items[i], info)
			if !ok {
				dst = dst[:es]
				continue
			}
			empty = false
		}
		return append(dst, ']'), scratch, true
	case n.isTmpl:
		if f.typed && len(n.template) == 1 && n.template[0].op != opLiteral {
			s := &n.template[0]
			var present bool
			scratch, present = s.appendValue(scratch[:0], info)
			switch {
			case !present && f.omitEmpty:
				return dst, scratch, false
			case !present:
				return append(dst, "null"...), scratch, true
			case s.op.numeric():
				return append(dst, scratch...), scratch, true
			}
			return appendJSONString(dst, scratch), scratch, true
		}
		scratch = appendText(scratch[:0], n.template, info, f.omitEmpty)
		return appendJSONString(dst, scratch), scratch, true
	}
	return append(dst, n.constant...), scratch, true
}

// appendJSONString appends s as a JSON string, escaping quotes, backslashes and control characters.
func appendJSONString[S string | []byte](dst []byte, s S) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
		case c == '\n':
			dst = append(dst, '\\', 'n')
		case c == '\r':
			dst = append(dst, '\\', 'r')
		case c == '\t':
			dst = append(dst, '\\', 't')
		case c < 0x20 || c == 0x7f:
			dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			dst = append(dst, c)
		}
	}
	return append(dst, '"')
}
