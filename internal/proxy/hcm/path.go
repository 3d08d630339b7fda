package hcm

import (
	"strings"

	"github.com/trellis-mesh/trellis/internal/proxy/xdsconfig"
)

// Path normalization, as Envoy's normalize_path, merge_slashes and path_with_escaped_slashes_action
// do it before routing: the normalized path is what routes match and what goes upstream, so that
// "/public/../admin" cannot reach an /admin backend through a /public route. Only the path is
// touched, never the query.

// pathNeedsWork reports whether p might change under normalization; most paths have nothing for it
// to do, and this check keeps them free of allocations.
func (h *Handler) pathNeedsWork(p string) bool {
	cfg := h.cfg
	if !cfg.NormalizePath && !cfg.MergeSlashes && cfg.EscapedSlashes == xdsconfig.EscapedSlashesKeep {
		return false
	}
	if q := strings.IndexByte(p, '?'); q >= 0 {
		p = p[:q]
	}
	return strings.Contains(p, "/.") || strings.Contains(p, "//") || strings.IndexByte(p, '%') >= 0 ||
		strings.IndexByte(p, '\\') >= 0
}

// normalizePath returns the request path (query included) as the connection manager's config wants
// it, and false when the request must be refused (an escaped slash under REJECT_REQUEST).
func normalizePath(p string, cfg *xdsconfig.HTTPConnectionManager) (string, bool) {
	if p == "" || p[0] != '/' {
		return p, true // "*" (OPTIONS) and authority-form targets have no path to normalize
	}
	path, query := p, ""
	if i := strings.IndexByte(p, '?'); i >= 0 {
		path, query = p[:i], p[i:]
	}
	switch cfg.EscapedSlashes {
	case xdsconfig.EscapedSlashesReject:
		if hasEscapedSlash(path) {
			return "", false
		}
	case xdsconfig.EscapedSlashesUnescape:
		path = unescapeSlashes(path)
	}
	if cfg.NormalizePath {
		path = removeDotSegments(strings.ReplaceAll(path, "\\", "/"))
	}
	if cfg.MergeSlashes {
		path = mergeSlashes(path)
	}
	return path + query, true
}

func hasEscapedSlash(p string) bool {
	for i := 0; i+2 < len(p); i++ {
		if p[i] == '%' && (p[i+1] == '2' && (p[i+2] == 'f' || p[i+2] == 'F') || p[i+1] == '5' && (p[i+2] == 'c' || p[i+2] == 'C')) {
			return true
		}
	}
	return false
}

func unescapeSlashes(p string) string {
	if !hasEscapedSlash(p) {
		return p
	}
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		if p[i] == '%' && i+2 < len(p) {
			switch strings.ToLower(p[i+1 : i+3]) {
			case "2f":
				b.WriteByte('/')
				i += 2
				continue
			case "5c":
				b.WriteByte('\\')
				i += 2
				continue
			}
		}
		b.WriteByte(p[i])
	}
	return b.String()
}

// removeDotSegments is RFC 3986 §5.2.4 over '/'-separated segments, where a segment spelled with
// percent-encoded dots ("%2e", ".%2E") counts as a dot segment too, as in Envoy's (Chromium's)
// canonicalizer. ".." at the root stays at the root.
func removeDotSegments(p string) string {
	segs := strings.Split(p[1:], "/")
	out := make([]string, 0, len(segs))
	for i, seg := range segs {
		last := i == len(segs)-1
		switch dotSegment(seg) {
		case 1:
			if last {
				out = append(out, "") // "/a/." is "/a/"
			}
		case 2:
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
			if last {
				out = append(out, "")
			}
		default:
			out = append(out, seg)
		}
	}
	return "/" + strings.Join(out, "/")
}

// dotSegment is 1 for ".", 2 for "..", else 0, with %2e accepted for a dot.
func dotSegment(seg string) int {
	n := 0
	for len(seg) > 0 {
		switch {
		case seg[0] == '.':
			seg = seg[1:]
		case len(seg) >= 3 && seg[0] == '%' && seg[1] == '2' && (seg[2] == 'e' || seg[2] == 'E'):
			seg = seg[3:]
		default:
			return 0
		}
		n++
		if n > 2 {
			return 0
		}
	}
	return n
}

func mergeSlashes(p string) string {
	if !strings.Contains(p, "//") {
		return p
	}
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		if p[i] == '/' && i > 0 && p[i-1] == '/' {
			continue
		}
		b.WriteByte(p[i])
	}
	return b.String()
}
