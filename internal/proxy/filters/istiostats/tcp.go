package istiostats

import (
	"github.com/trellis-mesh/trellis/internal/proxy/filters"
	im "github.com/trellis-mesh/trellis/internal/proxy/istiometrics"
	"github.com/trellis-mesh/trellis/internal/proxy/streaminfo"
)

// BuildConnObserver makes the running TCP filter.
func (c *Config) BuildConnObserver(env filters.Env) filters.ConnObserver {
	return &TCPFilter{t: env.Telemetry, destination: c.ServerGateway || env.Inbound}
}

// TCPFilter is the TCP side of istio.stats. Plaintext TCP carries no metadata exchange (Istio does
// it inside mTLS), so the source of an inbound connection is unknown; an outbound connection's
// destination comes from its host's istio.workload endpoint metadata.
type TCPFilter struct {
	t           *im.Telemetry
	destination bool
}

// notConnected are the flags of a connection that never reached an upstream.
const notConnected = streaminfo.NoClusterFound | streaminfo.NoHealthyUpstream | streaminfo.UpstreamConnectionFailure

// OnUpstreamConnected counts the connection opened.
func (f *TCPFilter) OnUpstreamConnected(info *streaminfo.Info) {
	if f.t == nil {
		return
	}
	f.t.TCP.With(f.key(info)).Add(im.TCPOpened, 1)
}

// OnConnClosed counts it closed, with its bytes. A connection that never reached an upstream is
// counted opened and closed here, with the flag that says why.
func (f *TCPFilter) OnConnClosed(info *streaminfo.Info) {
	if f.t == nil {
		return
	}
	s := f.t.TCP.With(f.key(info))
	if info.Flags&notConnected != 0 {
		s.Add(im.TCPOpened, 1)
	}
	s.Add(im.TCPClosed, 1)
	s.Add(im.TCPSent, uint64(max(info.BytesSent, 0)))
	s.Add(im.TCPReceived, uint64(max(info.BytesReceived, 0)))
}

func (f *TCPFilter) key(info *streaminfo.Info) im.TCPKey {
	t := f.t
	k := im.TCPKey{Flags: info.Flags}
	if f.destination {
		k.Reporter, k.Destination = im.ReporterDestination, t.Self
		k.Security, k.SourcePrincipal = downstreamSecurity(info)
	} else {
		var dst *im.Identity
		if info.UpstreamWorkload != "" {
			dst = t.Workloads.Get(info.UpstreamWorkload, im.IdentityFromWorkloadMetadata)
		}
		k.Reporter, k.Source, k.Destination = im.ReporterSource, t.Self, dst
	}
	k.Service = t.ServiceOf(info.UpstreamCluster, "", t.Self.Namespace)
	return k
}
