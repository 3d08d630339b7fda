package hcm

import (
	"testing"

	"github.com/trellis-mesh/trellis/internal/proxy/xdsconfig"
)

func TestPathNormalizationFollowsEnvoysOptions(t *testing.T) {
	normalize := &xdsconfig.HTTPConnectionManager{NormalizePath: true}
	merge := &xdsconfig.HTTPConnectionManager{MergeSlashes: true}
	both := &xdsconfig.HTTPConnectionManager{NormalizePath: true, MergeSlashes: true}
	reject := &xdsconfig.HTTPConnectionManager{EscapedSlashes: xdsconfig.EscapedSlashesReject}
	unescape := &xdsconfig.HTTPConnectionManager{NormalizePath: true, EscapedSlashes: xdsconfig.EscapedSlashesUnescape}
	for _, tc := range []struct {
		cfg      *xdsconfig.HTTPConnectionManager
		in, want string
		ok       bool
	}{
		{normalize, "/public/../admin", "/admin", true},
		{normalize, "/a/./b/../../c?x=/../y", "/c?x=/../y", true},
		{normalize, "/../../etc", "/etc", true},
		{normalize, "/a/.", "/a/", true},
		{normalize, "/a/..", "/", true},
		{normalize, "/a/%2e%2E/b", "/b", true},
		{normalize, "/a/.%2e/b", "/b", true},
		{normalize, "/a/...b/c", "/a/...b/c", true},
		{normalize, "/a\\..\\admin", "/admin", true},
		{normalize, "/a//b", "/a//b", true},
		{merge, "/a//b///c?q=//", "/a/b/c?q=//", true},
		{merge, "/a/../b", "/a/../b", true},
		{both, "//a/..//b", "/b", true},
		{reject, "/a%2Fb", "", false},
		{reject, "/a%5cb", "", false},
		{reject, "/a%20b", "/a%20b", true},
		{unescape, "/a/..%2Fadmin", "/admin", true},
		{normalize, "*", "*", true},
	} {
		got, ok := normalizePath(tc.in, tc.cfg)
		if got != tc.want || ok != tc.ok {
			t.Errorf("normalizePath(%q, %+v) = %q, %v; want %q, %v", tc.in, *tc.cfg, got, ok, tc.want, tc.ok)
		}
	}
}
