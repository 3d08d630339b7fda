// Package h1 is the proxy's own HTTP/1.1 codec: a Server that serves an http.Handler (handing
// HTTP/2 prior-knowledge connections to a private net/http server) and a Transport that is an
// http.RoundTripper.
//
// It exists for speed: net/http's Transport runs two goroutines per connection and hands every
// request across channels, and its server allocates generously per request. Here one goroutine
// serves a downstream connection, a round trip runs on the caller's goroutine, buffers are pooled and
// per-connection state is reused across keep-alive requests.
//
// Parsing is strict (RFC 9112, with the strictness of Envoy's codecs): anything that could frame a
// message two ways (Content-Length with Transfer-Encoding, several Content-Lengths, unknown codings,
// obs-fold, bare CR, whitespace before a colon) is rejected rather than repaired, because a proxy
// that repairs what its peer reads differently invites request smuggling.
//
// The surfaces mirror net/http (http.Request, http.ResponseWriter, http.Flusher, http.Hijacker,
// http.Response) so the rest of the proxy does not know which codec it runs on. The package depends
// only on the standard library.
package h1
