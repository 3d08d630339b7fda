package ui

import (
	"strings"
	"testing"
)

func TestEditWeightsChangesOnlyTheWeights(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
		weights        []int32
	}{{
		name:    "existing weights, quoted and commented, in the second document",
		in:      "kind: VirtualService\nmetadata: {name: other}\nspec: {}\n---\n# mine\nkind: VirtualService\nmetadata:\n  name: r\n  namespace: default\nspec:\n  http:\n  - route:\n    - destination: {host: a}\n      weight: \"70\"  # a\n    - weight: 30\n      destination:\n        host: b\n",
		want:    "kind: VirtualService\nmetadata: {name: other}\nspec: {}\n---\n# mine\nkind: VirtualService\nmetadata:\n  name: r\n  namespace: default\nspec:\n  http:\n  - route:\n    - destination: {host: a}\n      weight: 5  # a\n    - weight: 95\n      destination:\n        host: b\n",
		weights: []int32{5, 95},
	}, {
		name:    "missing weights are added after the destination, CRLF kept",
		in:      "kind: VirtualService\r\nmetadata:\r\n  name: r\r\nspec:\r\n  http:\r\n  - route:\r\n    - destination:\r\n        host: a\r\n    - destination:\r\n        host: b\r\n        port:\r\n          number: 80",
		want:    "kind: VirtualService\r\nmetadata:\r\n  name: r\r\nspec:\r\n  http:\r\n  - route:\r\n    - destination:\r\n        host: a\r\n      weight: 60\r\n    - destination:\r\n        host: b\r\n        port:\r\n          number: 80\r\n      weight: 40\r\n",
		weights: []int32{60, 40},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := editWeights([]byte(tc.in), "VirtualService", "default", "r", 0, tc.weights)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Errorf("got:\n%q\nwant:\n%q", got, tc.want)
			}
		})
	}
}

func TestEditWeightsRefusesWhatItCannotEditFaithfully(t *testing.T) {
	for _, tc := range []struct{ name, in, err string }{
		{"flow-style route entry", "kind: VirtualService\nmetadata: {name: r}\nspec:\n  http:\n  - route:\n    - {destination: {host: a}, weight: 100}\n", "block-style"},
		{"no such resource", "kind: VirtualService\nmetadata: {name: s}\nspec: {}\n", "no VirtualService default/r"},
		{"different count", "kind: VirtualService\nmetadata: {name: r}\nspec:\n  http:\n  - route:\n    - destination: {host: a}\n    - destination: {host: b}\n", "2 destinations"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := editWeights([]byte(tc.in), "VirtualService", "default", "r", 0, []int32{100})
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("error %v, want one containing %q", err, tc.err)
			}
		})
	}
}
