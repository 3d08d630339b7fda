package ui

import (
	"strings"
	"time"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/trellis-mesh/trellis/internal/model"
	"github.com/trellis-mesh/trellis/internal/xds"
)

// xdsTypes are the types the console reports, by their short names.
var xdsTypes = []struct{ short, url string }{
	{"CDS", resourcev3.ClusterType},
	{"LDS", resourcev3.ListenerType},
	{"EDS", resourcev3.EndpointType},
	{"RDS", resourcev3.RouteType},
}

func shortType(url string) string {
	for _, t := range xdsTypes {
		if t.url == url {
			return t.short
		}
	}
	return url[strings.LastIndex(url, ".")+1:]
}

// Sync status words, as istioctl proxy-status writes them.
const (
	statusSynced  = "SYNCED"
	statusStale   = "STALE"
	statusNotSent = "NOT SENT"
)

func proxiesOf(statuses []xds.ProxyStatus) []Proxy {
	out := make([]Proxy, 0, len(statuses))
	for _, st := range statuses {
		p := Proxy{
			ID:          st.ID,
			ConnectedAt: formatTime(st.ConnectedAt),
			Connected:   st.Streams > 0,
			Types:       map[string]TypeState{},
			LastError:   st.LastError,
		}
		if mp, err := model.ParseProxy(st.ID); err == nil {
			p.Name, p.Namespace = mp.Name, mp.Namespace
		}
		for _, t := range xdsTypes {
			ts := TypeState{Sent: st.Versions[t.url], Acked: st.Acked[t.url]}
			nacked := st.LastNACK != nil && st.LastNACK.TypeURL == t.url
			switch {
			case ts.Sent == "":
				ts.Status = statusNotSent
			case ts.Sent == ts.Acked:
				ts.Status = statusSynced
			case ts.Acked == "" && !nacked:
				// The server holds every type for a proxy; one the proxy
				// never answered for, it never asked for.
				ts.Status = statusNotSent
			default:
				ts.Status = statusStale
			}
			p.Types[t.short] = ts
		}
		if n := st.LastNACK; n != nil {
			p.LastNack = &Nack{Type: shortType(n.TypeURL), Message: n.Message, At: formatTime(n.At)}
		}
		out = append(out, p)
	}
	return out
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}
