package route

// AppendAction is what adding a header does when the header is already there (Envoy's
// HeaderValueOption.HeaderAppendAction).
type AppendAction int

// The actions of Envoy's HeaderAppendAction, in its order.
const (
	AppendIfExistsOrAdd AppendAction = iota
	AddIfAbsent
	OverwriteIfExistsOrAdd
	OverwriteIfExists
)

// HeaderValue is one header to add.
type HeaderValue struct {
	Name      string // canonical MIME form
	Value     string
	Action    AppendAction
	KeepEmpty bool // add even when Value is empty
}

// HeaderMutation is a level's request or response header changes: removals first, then additions,
// as Envoy applies them.
type HeaderMutation struct {
	Add    []HeaderValue
	Remove []string // canonical MIME form
}

// HeaderMap is the writable header set a mutation applies to; net/http's Header satisfies it.
type HeaderMap interface {
	Get(key string) string
	Values(key string) []string
	Set(key, value string)
	Add(key, value string)
	Del(key string)
}

// Empty reports whether the mutation changes nothing.
func (m *HeaderMutation) Empty() bool { return len(m.Add) == 0 && len(m.Remove) == 0 }

// Apply performs the mutation on h.
func (m *HeaderMutation) Apply(h HeaderMap) {
	for _, name := range m.Remove {
		h.Del(name)
	}
	for i := range m.Add {
		v := &m.Add[i]
		if v.Value == "" && !v.KeepEmpty {
			continue
		}
		switch v.Action {
		case AppendIfExistsOrAdd:
			h.Add(v.Name, v.Value)
		case AddIfAbsent:
			if len(h.Values(v.Name)) == 0 {
				h.Set(v.Name, v.Value)
			}
		case OverwriteIfExistsOrAdd:
			h.Set(v.Name, v.Value)
		case OverwriteIfExists:
			if len(h.Values(v.Name)) > 0 {
				h.Set(v.Name, v.Value)
			}
		}
	}
}

// Mutations lists the header mutations that apply to a request routed by rt via vh and, for a
// weighted split, wc, in the order to apply them: by default the most specific level first, so the
// route configuration's level has the last word (Envoy's default); reversed with MostSpecificWins.
// Entries may be nil.
func (t *Table) Mutations(vh *VirtualHost, rt *Route, wc *WeightedCluster) (request, response [4]*HeaderMutation) {
	if wc != nil {
		request[0], response[0] = &wc.RequestHeaders, &wc.ResponseHeaders
	}
	request[1], request[2], request[3] = &rt.RequestHeaders, &vh.RequestHeaders, &t.RequestHeaders
	response[1], response[2], response[3] = &rt.ResponseHeaders, &vh.ResponseHeaders, &t.ResponseHeaders
	if t.MostSpecificWins {
		for i, j := 0, 3; i < j; i, j = i+1, j-1 {
			request[i], request[j] = request[j], request[i]
			response[i], response[j] = response[j], response[i]
		}
	}
	return request, response
}

// ApplyAll applies each non-nil mutation in order.
func ApplyAll(ms [4]*HeaderMutation, h HeaderMap) {
	for _, m := range ms {
		if m != nil && !m.Empty() {
			m.Apply(h)
		}
	}
}
