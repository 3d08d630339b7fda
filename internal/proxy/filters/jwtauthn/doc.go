// Package jwtauthn is Envoy's JWT authentication HTTP filter (envoy.filters.http.jwt_authn,
// envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication), which Istio's
// RequestAuthentication becomes.
//
// Per request it picks a requirement (the route's PerRouteConfig, else the first matching rule),
// extracts the tokens of the providers the requirement names (default: "Authorization: Bearer"
// and the access_token query parameter), and verifies each: parsed as jwt_verify_lib does
// (token.go), issuer, exp/nbf with the clock skew, audiences, then the signature against the
// provider's JWKS (jwks.go: RS*, PS*, ES256/384/512 and EdDSA keys through go-jose; alg "none" is
// never accepted and HS* find no key). A verified token's payload goes to the dynamic metadata
// (payload_in_metadata), forward_payload_header and claim_to_headers; the token's header is removed
// unless forward. A failure is Envoy's local reply: 401 (403 for a disallowed audience), the
// jwt_verify_lib status message as body, WWW-Authenticate: Bearer realm="<uri>"[, error="invalid_token"].
//
// Remote JWKS (fetch.go) are fetched through the proxy's own cluster named in http_uri, cached for
// cache_duration (default 5 min), fetched again on expiry and, at most every 5 s, when a token
// names a kid the cached set lacks, so rotated keys work without a restart. Verified tokens are
// cached per provider (jwt_cache_config, default 100 tokens up to 4 KiB), emptied when the JWKS
// changes.
//
// Not implemented (rejected at config time with a field path): subjects, require_expiration,
// max_lifetime, normalize_payload_in_metadata, failed_status_in_metadata, clear_route_cache,
// claim_path, filter_state_rules, extract_only_without_validation, rules' query_parameters and
// other route matchers. Differences from Envoy: a token taken from a query parameter or cookie is
// not removed from the request (Envoy removes query parameters in recent versions); HMAC (kty
// "oct") keys are not used; an async_fetch provider fetches on its first request instead of when
// the listener starts.
//
// It must not depend on the control plane; Envoy protos are read in config.go only.
package jwtauthn
