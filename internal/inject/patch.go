package inject

import (
	"encoding/json"
	"maps"
	"reflect"
	"slices"
	"strings"
)

// patchOp is one JSON Patch (RFC 6902) operation.
type patchOp struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value,omitempty"`
}

// patchedSections are the parts of a pod injection changes; below them whole fields are
// replaced (spec.containers, metadata.labels, ...), so the patch touches nothing else and a
// field the injector's Kubernetes types do not know survives.
var patchedSections = []string{"metadata", "spec"}

// diff returns the operations turning orig into mod, one per changed field of
// patchedSections. Both are JSON objects of a pod (or pod template).
func diff(orig, mod map[string]any) []patchOp {
	var ops []patchOp
	for _, sec := range patchedSections {
		o, _ := orig[sec].(map[string]any)
		m, _ := mod[sec].(map[string]any)
		if o == nil {
			if m != nil {
				ops = append(ops, patchOp{Op: "add", Path: "/" + sec, Value: m})
			}
			continue
		}
		keys := slices.Sorted(maps.Keys(o))
		for k := range m {
			if _, ok := o[k]; !ok {
				keys = append(keys, k)
			}
		}
		slices.Sort(keys)
		for _, k := range keys {
			ov, inOrig := o[k]
			mv, inMod := m[k]
			path := "/" + sec + "/" + escapePointer(k)
			switch {
			case inOrig && !inMod:
				ops = append(ops, patchOp{Op: "remove", Path: path})
			case !inOrig:
				ops = append(ops, patchOp{Op: "add", Path: path, Value: mv})
			case !reflect.DeepEqual(ov, mv):
				ops = append(ops, patchOp{Op: "replace", Path: path, Value: mv})
			}
		}
	}
	return ops
}

// apply applies ops made by diff to obj (a JSON object) in place.
func apply(obj map[string]any, ops []patchOp) {
	for _, op := range ops {
		parts := strings.Split(strings.TrimPrefix(op.Path, "/"), "/")
		if len(parts) == 1 {
			obj[parts[0]] = op.Value
			continue
		}
		sec, _ := obj[parts[0]].(map[string]any)
		if sec == nil {
			sec = map[string]any{}
			obj[parts[0]] = sec
		}
		key := unescapePointer(parts[1])
		if op.Op == "remove" {
			delete(sec, key)
		} else {
			sec[key] = op.Value
		}
	}
}

// toMap is v as a JSON object.
func toMap(v any) (map[string]any, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	err = json.Unmarshal(b, &m)
	return m, err
}

func escapePointer(s string) string {
	return strings.NewReplacer("~", "~0", "/", "~1").Replace(s)
}

func unescapePointer(s string) string {
	return strings.NewReplacer("~1", "/", "~0", "~").Replace(s)
}
