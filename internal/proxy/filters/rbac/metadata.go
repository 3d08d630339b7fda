package rbac

import "github.com/trellis-mesh/trellis/internal/proxy/filters"

// metadataMatcher tests the request's dynamic metadata (JWT claims, shadow results) with Envoy's
// MetadataMatcher, shared with ext_authz's filter_enabled_metadata.
type metadataMatcher struct{ m *filters.MetadataMatcher }

func (m metadataMatcher) match(r *Request) bool { return m.m.Match(r.Metadata) }
