// Package hashpolicy computes a request's hash from a route's hash_policy, as Envoy's
// Router::HashPolicyImpl does: from a header, a cookie (generated and set on the response when it
// has a ttl and the request lacks it), the downstream source IP or a query parameter, several
// policies combined by rotate-and-xor, stopping at the first terminal policy that produced one.
// Ring hash and Maglev clusters turn the hash into a host.
//
// It depends only on net/http and xxhash; the route package holds a *Policy, the connection manager
// calls Hash per request (no allocations unless a cookie must be generated or a query value
// unescaped).
package hashpolicy
