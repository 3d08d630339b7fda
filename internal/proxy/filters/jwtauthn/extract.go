package jwtauthn

import (
	"net/http"
	"slices"
	"sort"
	"strings"

	"github.com/trellis-mesh/trellis/internal/proxy/reqparse"
)

// issuers is Envoy's JwtIssuerChecker: the issuers of the providers that named a location; a
// provider without issuer allows any.
type issuers struct {
	any  bool
	list []string
}

func (is *issuers) add(iss string) {
	if iss == "" {
		is.any = true
	} else if !slices.Contains(is.list, iss) {
		is.list = append(is.list, iss)
	}
}

func (is *issuers) allow(iss string) bool { return is.any || slices.Contains(is.list, iss) }

type headerSpec struct {
	headerLocation
	issuers issuers
}

type namedSpec struct {
	name    string
	issuers issuers
}

// extractor is Envoy's ExtractorImpl for one provider or a set of them: headers first (ordered by
// name and prefix), then query parameters, then cookies (each ordered by name).
type extractor struct {
	headers   []headerSpec
	params    []namedSpec
	cookies   []namedSpec
	sanitized []string // forward_payload_header and claim_to_headers headers, removed from requests
}

func newExtractor(ps ...*provider) *extractor {
	e := &extractor{}
	for _, p := range ps {
		for _, h := range p.headers {
			i := slices.IndexFunc(e.headers, func(s headerSpec) bool { return s.headerLocation == h })
			if i < 0 {
				e.headers = append(e.headers, headerSpec{headerLocation: h})
				i = len(e.headers) - 1
			}
			e.headers[i].issuers.add(p.issuer)
		}
		e.params = addNamed(e.params, p.params, p.issuer)
		e.cookies = addNamed(e.cookies, p.cookies, p.issuer)
		if p.forwardPayloadHeader != "" {
			e.sanitized = append(e.sanitized, p.forwardPayloadHeader)
		}
		for _, ch := range p.claimHeaders {
			e.sanitized = append(e.sanitized, ch.header)
		}
	}
	sort.SliceStable(e.headers, func(i, j int) bool {
		return e.headers[i].name+e.headers[i].prefix < e.headers[j].name+e.headers[j].prefix
	})
	sort.SliceStable(e.params, func(i, j int) bool { return e.params[i].name < e.params[j].name })
	sort.SliceStable(e.cookies, func(i, j int) bool { return e.cookies[i].name < e.cookies[j].name })
	return e
}

func addNamed(list []namedSpec, names []string, iss string) []namedSpec {
	for _, n := range names {
		i := slices.IndexFunc(list, func(s namedSpec) bool { return s.name == n })
		if i < 0 {
			list = append(list, namedSpec{name: n})
			i = len(list) - 1
		}
		list[i].issuers.add(iss)
	}
	return list
}

// location is one token found in a request and where it was.
type location struct {
	value   string
	header  string // the header it came from, removed when the provider does not forward; "" otherwise
	issuers *issuers
}

// sanitize removes headers a verified token would set, so a client cannot forge them.
func (e *extractor) sanitize(h http.Header) {
	for _, name := range e.sanitized {
		delete(h, name)
	}
}

// extract finds the request's tokens in e's locations, into r's scratch list.
func (e *extractor) extract(r *run) []location {
	out := r.tokens[:0]
	h := r.x.Headers
	for i := range e.headers {
		s := &e.headers[i]
		for _, v := range h[s.name] {
			if s.prefix != "" {
				pos := strings.Index(v, s.prefix)
				if pos < 0 {
					continue
				}
				v = tokenAfter(v, pos+len(s.prefix))
			}
			out = append(out, location{value: v, header: s.name, issuers: &s.issuers})
		}
	}
	if len(e.params) > 0 {
		if _, query, ok := strings.Cut(r.x.Path, "?"); ok {
			for i := range e.params {
				if v, found := reqparse.QueryValue(query, e.params[i].name); found {
					out = append(out, location{value: v, issuers: &e.params[i].issuers})
				}
			}
		}
	}
	if len(e.cookies) > 0 {
		for i := range e.cookies {
			if v, found := reqparse.CookieValue(h["Cookie"], e.cookies[i].name); found {
				out = append(out, location{value: v, issuers: &e.cookies[i].issuers})
			}
		}
	}
	r.tokens = out
	return out
}

// tokenAfter is Envoy's extractJWT: from the first base64url-or-dot character at or after from to
// the end of the value; the whole value when there is none.
func tokenAfter(v string, from int) string {
	for i := from; i < len(v); i++ {
		if isTokenChar(v[i]) {
			return v[i:]
		}
	}
	return v
}

func isTokenChar(c byte) bool {
	return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.'
}
