package model

import "testing"

func TestExportedFollowsIstioExportTo(t *testing.T) {
	for _, tc := range []struct {
		exportTo  []string
		owner, ns string
		want      bool
	}{
		{[]string{"*"}, "b", "a", true},
		{[]string{"."}, "b", "b", true},
		{[]string{"."}, "b", "a", false},
		{[]string{"~"}, "b", "b", false},
		{[]string{"a", "c"}, "b", "a", true},
		{[]string{"a", "c"}, "b", "b", false},
		{[]string{".", "a"}, "b", "b", true},
	} {
		if got := Exported(tc.exportTo, tc.owner, tc.ns); got != tc.want {
			t.Errorf("Exported(%q, owner %s, to %s) = %v, want %v", tc.exportTo, tc.owner, tc.ns, got, tc.want)
		}
	}
}
