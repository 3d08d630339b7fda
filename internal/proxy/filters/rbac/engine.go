package rbac

import (
	"crypto/tls"
	"net/netip"
	"sync"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/trellis-mesh/trellis/internal/proxy/route"
)

// Action is what an engine does with a request its policies match (Envoy's RBAC.Action).
type Action int

// Envoy's actions.
const (
	// Allow lets through the requests a policy matches and denies the others.
	Allow Action = iota
	// Deny denies the requests a policy matches and lets through the others.
	Deny
	// Log lets everything through and records in the access_log_hint whether a policy matched.
	Log
)

// Request is what policies are evaluated against: one HTTP request, or one TCP connection (Headers
// nil). The filters fill it on the stack; the engine never keeps it.
type Request struct {
	// Headers reads the request headers, pseudo-headers (":method", ":path", ":authority")
	// included; nil on a TCP connection, where header rules see no headers and path rules never
	// match, as in Envoy's network filter.
	Headers route.HeaderGetter
	// DirectRemote is the peer's address; Remote the client's as the connection manager derives it
	// from X-Forwarded-For (Envoy's downstream remote address). Zero when unknown.
	DirectRemote, Remote netip.Addr
	// Local is the address the connection was accepted on (destination_ip, destination_port).
	Local netip.AddrPort
	// ServerName is the TLS SNI, "" without one.
	ServerName string
	// TLS is the downstream TLS state, nil in plaintext. PeerURISAN, when set, is the first URI SAN
	// of its verified client certificate, already rendered (saves rendering it per request).
	TLS        *tls.ConnectionState
	PeerURISAN string
	// Metadata is the dynamic metadata earlier filters set (jwt_authn's payloads).
	Metadata map[string]*structpb.Struct
}

// requests recycles Requests: matchers are called through an interface, so a Request on the stack
// would escape to the heap on every evaluation.
var requests = sync.Pool{New: func() any { return new(Request) }}

func getRequest() *Request { return requests.Get().(*Request) }

func putRequest(r *Request) {
	*r = Request{} // keep nothing of the request (headers, certificates, metadata)
	requests.Put(r)
}

// Engine is one compiled RBAC config: an action and its policies, sorted by name as Envoy keeps
// them, so the first matching policy in name order is the one reported.
type Engine struct {
	action   Action
	policies []policy
	// needs is what the policies read, so a filter gathers nothing else.
	needs needs
}

type policy struct {
	name string
	// details is the response code detail of a denial by this policy; nameValue the name as a
	// metadata value. Both made once, so a decision costs no allocation.
	details     string
	nameValue   *structpb.Value
	permissions []matcher // any of them
	principals  []matcher // and any of these
}

// needs are the request attributes an engine reads that cost something to gather.
type needs uint8

const (
	needRemote needs = 1 << iota // remote_ip: X-Forwarded-For parsing
	needLocal                    // destination_ip/port: the local address
	needDirect                   // source_ip/direct_remote_ip
)

// Decision is the outcome of evaluating a request.
type Decision struct {
	Allowed bool
	// Matched says a policy matched; matched is that policy.
	Matched bool
	matched *policy
}

// Policy is the name of the policy that matched, "" when none did.
func (d Decision) Policy() string {
	if d.matched == nil {
		return ""
	}
	return d.matched.name
}

// Details is Envoy's response code detail for the decision as a denial:
// "rbac_access_denied_matched_policy[<policy>]", or "...[none]" when no policy matched.
func (d Decision) Details() string {
	if d.matched == nil {
		return detailsNone
	}
	return d.matched.details
}

const detailsNone = "rbac_access_denied_matched_policy[none]"

// Action is the engine's action.
func (e *Engine) Action() Action { return e.action }

// Evaluate applies the engine to r.
func (e *Engine) Evaluate(r *Request) Decision {
	p := e.match(r)
	d := Decision{Matched: p != nil, matched: p}
	switch e.action {
	case Allow:
		d.Allowed = d.Matched
	case Deny:
		d.Allowed = !d.Matched
	default:
		d.Allowed = true
	}
	return d
}

func (e *Engine) match(r *Request) *policy {
	for i := range e.policies {
		p := &e.policies[i]
		if anyMatch(p.permissions, r) && anyMatch(p.principals, r) {
			return p
		}
	}
	return nil
}

func anyMatch(ms []matcher, r *Request) bool {
	for _, m := range ms {
		if m.match(r) {
			return true
		}
	}
	return false
}
