package ui

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	yaml "go.yaml.in/yaml/v3"
)

// editWeights returns data with the weights of spec.http[http].route of
// the resource kind ns/name set to weights. It edits the text in place,
// by the positions the YAML parser reports, rather than re-encoding: every
// other byte (comments, other documents, key order, quoting, indentation)
// stays as the user wrote it. A destination without a weight gets a
// "weight: N" line after its last line, indented like its other keys.
func editWeights(data []byte, kind, ns, name string, http int, weights []int32) ([]byte, error) {
	route, err := findRoute(data, kind, ns, name, http)
	if err != nil {
		return nil, err
	}
	if len(route.Content) != len(weights) {
		return nil, fmt.Errorf("spec.http[%d].route has %d destinations in the file, not %d (was it edited meanwhile?)",
			http, len(route.Content), len(weights))
	}
	var edits []textEdit
	for i, dest := range route.Content {
		path := fmt.Sprintf("spec.http[%d].route[%d]", http, i)
		if dest.Kind != yaml.MappingNode || dest.Style&yaml.FlowStyle != 0 {
			return nil, fmt.Errorf("%s: only block-style mappings can be edited here; edit the file by hand", path)
		}
		text := strconv.Itoa(int(weights[i]))
		if _, val := mappingEntry(dest, "weight"); val != nil {
			if val.Kind != yaml.ScalarNode || val.Style&(yaml.LiteralStyle|yaml.FoldedStyle) != 0 {
				return nil, fmt.Errorf("%s.weight: not a plain number; edit the file by hand", path)
			}
			width := len(val.Value)
			if val.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle) != 0 {
				width += 2
			}
			edits = append(edits, textEdit{line: val.Line, col: val.Column, width: width, text: text})
			continue
		}
		first := dest.Content[0] // a mapping with no keys has no weight to set
		last, err := lastLine(dest)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		edits = append(edits, textEdit{line: last, insertAfter: true, text: strings.Repeat(" ", first.Column-1) + "weight: " + text})
	}
	return applyEdits(data, edits)
}

// findRoute returns the spec.http[http].route sequence of the document
// holding kind ns/name.
func findRoute(data []byte, kind, ns, name string, http int) (*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var doc yaml.Node
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("no %s %s/%s in the file (was it edited meanwhile?)", kind, ns, name)
		}
		if err != nil {
			return nil, fmt.Errorf("reading the file: %w", err)
		}
		if len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
			continue
		}
		root := doc.Content[0]
		_, k := mappingEntry(root, "kind")
		_, meta := mappingEntry(root, "metadata")
		if k == nil || k.Value != kind || meta == nil {
			continue
		}
		_, n := mappingEntry(meta, "name")
		_, nsNode := mappingEntry(meta, "namespace")
		docNS := "default"
		if nsNode != nil && nsNode.Value != "" {
			docNS = nsNode.Value
		}
		if n == nil || n.Value != name || docNS != ns {
			continue
		}
		_, spec := mappingEntry(root, "spec")
		_, httpSeq := mappingEntry(spec, "http")
		if httpSeq == nil || httpSeq.Kind != yaml.SequenceNode || http >= len(httpSeq.Content) {
			return nil, fmt.Errorf("no spec.http[%d] in the file (was it edited meanwhile?)", http)
		}
		_, route := mappingEntry(httpSeq.Content[http], "route")
		if route == nil || route.Kind != yaml.SequenceNode {
			return nil, fmt.Errorf("spec.http[%d] has no route list in the file", http)
		}
		return route, nil
	}
}

// mappingEntry returns the key and value nodes of key in mapping m, or nils.
func mappingEntry(m *yaml.Node, key string) (k, v *yaml.Node) {
	if m == nil || m.Kind != yaml.MappingNode {
		return nil, nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i], m.Content[i+1]
		}
	}
	return nil, nil
}

// lastLine is the last line any node under n starts on: for block-style
// YAML without multi-line scalars, the last line n spans.
func lastLine(n *yaml.Node) (int, error) {
	if n.Kind == yaml.ScalarNode && n.Style&(yaml.LiteralStyle|yaml.FoldedStyle) != 0 {
		return 0, errors.New("holds a multi-line scalar; edit the file by hand")
	}
	if n.Kind == yaml.AliasNode {
		return 0, errors.New("holds an alias; edit the file by hand")
	}
	last := n.Line
	for _, c := range n.Content {
		l, err := lastLine(c)
		if err != nil {
			return 0, err
		}
		last = max(last, l)
	}
	return last, nil
}

// textEdit replaces width characters at line:col (both 1-based) with text,
// or inserts text as a new line after line.
type textEdit struct {
	line, col, width int
	insertAfter      bool
	text             string
}

func applyEdits(data []byte, edits []textEdit) ([]byte, error) {
	lines := strings.SplitAfter(string(data), "\n")
	eol := "\n"
	if strings.Contains(string(data), "\r\n") {
		eol = "\r\n" // new lines end as the file's do
	}
	// Bottom up, so that earlier edits do not move later ones.
	slices.SortStableFunc(edits, func(a, b textEdit) int {
		if a.line != b.line {
			return b.line - a.line
		}
		if a.insertAfter != b.insertAfter {
			if a.insertAfter {
				return -1
			}
			return 1
		}
		return b.col - a.col
	})
	for _, e := range edits {
		if e.line < 1 || e.line > len(lines) {
			return nil, fmt.Errorf("line %d is outside the file", e.line)
		}
		l := lines[e.line-1]
		if e.insertAfter {
			if !strings.HasSuffix(l, "\n") {
				l += eol // the last line of a file without a final newline
			}
			lines[e.line-1] = l + e.text + eol
			continue
		}
		// Columns count characters, not bytes.
		runes := []rune(l)
		start := e.col - 1
		if start < 0 || start+e.width > len(runes) {
			return nil, fmt.Errorf("line %d column %d is outside the line", e.line, e.col)
		}
		lines[e.line-1] = string(runes[:start]) + e.text + string(runes[start+e.width:])
	}
	return []byte(strings.Join(lines, "")), nil
}
