// Package reqparse reads single values out of a request the way Envoy does, without parsing (or
// allocating for) the rest: a query parameter, a cookie. Route matching, hash policies and the JWT
// filter all read them, and must agree.
package reqparse

import (
	"net/url"
	"strings"
)

// QueryValue returns the first value of the parameter name in a raw query, percent-decoded as
// Envoy's parseAndDecodeQueryString does (a key or value that does not decode is used as it is).
// It allocates only to decode an escaped key or value.
func QueryValue(raw, name string) (string, bool) {
	for raw != "" {
		var pair string
		pair, raw, _ = strings.Cut(raw, "&")
		k, v, _ := strings.Cut(pair, "=")
		if strings.ContainsAny(k, "%+") {
			if dk, err := url.QueryUnescape(k); err == nil {
				k = dk
			}
		}
		if k != name {
			continue
		}
		if strings.ContainsAny(v, "%+") {
			if dv, err := url.QueryUnescape(v); err == nil {
				v = dv
			}
		}
		return v, true
	}
	return "", false
}

// CookieValue finds a cookie by name in the Cookie header lines; surrounding quotes are dropped,
// as Envoy's parseCookieValue does.
func CookieValue(headers []string, name string) (string, bool) {
	for _, line := range headers {
		for line != "" {
			var part string
			part, line, _ = strings.Cut(line, ";")
			k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
			if !ok || k != name {
				continue
			}
			if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
				v = v[1 : len(v)-1]
			}
			return v, true
		}
	}
	return "", false
}
