package hcm

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/trellis-mesh/trellis/internal/proxy/h1"
	"github.com/trellis-mesh/trellis/internal/proxy/hashpolicy"
	"github.com/trellis-mesh/trellis/internal/proxy/route"
	"github.com/trellis-mesh/trellis/internal/proxy/streaminfo"
	"github.com/trellis-mesh/trellis/internal/proxy/upstream"
)

// HTTP Upgrade (WebSocket and others), as Envoy's upgrade_configs: a request asking to upgrade is
// forwarded with its Upgrade and Connection headers when the connection manager enables that
// upgrade type, and refused with 403 otherwise. On 101 Switching Protocols both connections are
// spliced until either side closes. Upgrades ride HTTP/1.1 only (HTTP/2's extended CONNECT is not
// supported), so the upstream leg always uses the cluster's HTTP/1.1 transport.

// checkUpgrade records in s the upgrade type r asks for. It answers 403 itself, and returns false,
// when the type is not enabled (Envoy's upgrade_failed): the connection manager must list the type,
// and the route's upgrade_configs, when it names the type, override whether it is enabled.
func (h *Handler) checkUpgrade(w http.ResponseWriter, r *http.Request, s *stream, a *route.Action) bool {
	typ := upgradeType(r)
	if typ == "" {
		return true
	}
	enabled, listed := h.cfg.Upgrade(typ)
	if listed {
		if on, ok := a.UpgradeEnabled(typ); ok {
			enabled = on
		}
	}
	if !enabled {
		h.localReply(w, r, s, http.StatusForbidden, "", detailsUpgradeFailed, 0)
		return false
	}
	s.upgrade = typ
	return true
}

// upgradeType is the Upgrade token of an HTTP/1.1 request whose Connection header lists
// "upgrade", else "".
func upgradeType(r *http.Request) string {
	if r.ProtoMajor != 1 {
		return ""
	}
	up := r.Header.Get("Upgrade")
	if up == "" {
		return ""
	}
	for _, v := range r.Header["Connection"] {
		for tok := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(tok), "upgrade") {
				return up
			}
		}
	}
	return ""
}

// forwardUpgrade sends the upgrade request (which hop-by-hop removal has stripped) to a host of cl
// as an upgrade to s.upgrade, and on 101 splices the connections. Upgrades are never retried.
func (h *Handler) forwardUpgrade(w http.ResponseWriter, r *http.Request, s *stream, cl *upstream.Cluster, hdr http.Header, path, hostHeader string, ctx context.Context, hashed hashpolicy.Result) {
	host := h.pickHost(r, cl, nil, nil, hashed)
	if host == nil {
		cl.Stats.NoneHealthy.Inc()
		h.localReply(w, r, s, http.StatusServiceUnavailable, bodyNoHealthy, detailsNoHealthy, streaminfo.NoHealthyUpstream)
		return
	}
	s.info.UpstreamHost = host.Address
	s.info.UpstreamWorkload = host.IstioWorkload()
	s.info.Attempts = 1
	hdr.Set("Connection", "Upgrade")
	hdr.Set("Upgrade", s.upgrade)
	var body io.ReadCloser
	if s.body != nil {
		body = s.body
	}
	out := newUpstreamRequest(ctx, r, hdr, path, hostHeader, host, body)
	if !cl.TryRequest() {
		h.overflow(w, r, s, cl)
		return
	}
	defer cl.ReleaseRequest()
	host.Begin()
	cl.Stats.RqTotal.Inc()
	cl.Stats.RqActive.Inc()
	failed := true
	defer func() {
		host.End(failed)
		cl.Stats.RqActive.Dec()
	}()
	tr := cl.Transport(false)
	if t, ok := tr.(*http.Transport); ok && t.Protocols != nil && !t.Protocols.HTTP1() {
		tr = nil // an HTTP/2-only cluster cannot carry an HTTP/1.1 upgrade
	}
	if tr == nil {
		cl.Stats.RecordStatus(http.StatusServiceUnavailable)
		h.localReply(w, r, s, http.StatusServiceUnavailable, bodyReset, detailsUpgradeFailed, streaminfo.UpstreamProtocolError)
		return
	}
	if _, ok := tr.(*h1.Transport); !ok {
		s.keepHeader = true // net/http's transport may write it after RoundTrip returns
	}
	upstreamStart := time.Now()
	resp, err := tr.RoundTrip(out)
	if err != nil {
		why := classify(err, r.Context(), ctx, ctx)
		if why != failOverflow && why != failDownstreamGone {
			cl.ReportLocalFailure(host, why == failTimeout)
		}
		h.upstreamFailure(w, r, s, cl, why, err)
		return
	}
	defer resp.Body.Close()
	cl.ReportResponse(host, resp.StatusCode)
	s.info.UpstreamServiceTime = time.Since(upstreamStart)
	cl.Stats.RecordStatus(resp.StatusCode)
	failed = resp.StatusCode >= 500
	if resp.StatusCode != http.StatusSwitchingProtocols {
		// The upstream declined: its answer goes back as an ordinary response.
		dst := w.Header()
		for k, vs := range resp.Header {
			dst[k] = vs
		}
		removeHopByHop(dst)
		w.WriteHeader(resp.StatusCode)
		h.stats.RqClass.Record(resp.StatusCode)
		s.info.ResponseCode = resp.StatusCode
		s.info.ResponseCodeDetails = detailsViaUpstream
		n, _ := io.Copy(w, resp.Body)
		s.info.BytesSent = n
		return
	}
	upConn, ok := resp.Body.(io.ReadWriteCloser)
	if !ok {
		h.localReply(w, r, s, http.StatusBadGateway, bodyReset, detailsUpgradeFailed, streaminfo.UpstreamProtocolError)
		failed = true
		return
	}
	down, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		h.localReply(w, r, s, http.StatusInternalServerError, "upgrade_failed", detailsUpgradeFailed, 0)
		failed = true
		return
	}
	defer down.Close()
	h.stats.RqClass.Record(http.StatusSwitchingProtocols)
	s.info.ResponseCode = http.StatusSwitchingProtocols
	s.info.ResponseCodeDetails = detailsViaUpstream
	// The 101 goes down as the upstream sent it, Upgrade and Connection included.
	_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\n")
	_ = resp.Header.Write(brw)
	_, _ = brw.WriteString("\r\n")
	if brw.Flush() != nil {
		return
	}
	splice(down, brw.Reader, upConn)
}

// splice copies both ways until either direction ends, then closes both.
func splice(down io.ReadWriteCloser, downReader io.Reader, up io.ReadWriteCloser) {
	var once sync.Once
	closeBoth := func() {
		once.Do(func() {
			_ = down.Close()
			_ = up.Close()
		})
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		copyBuffered(up, downReader) // downReader holds what the client sent after its request
		closeBoth()
	}()
	copyBuffered(down, up)
	closeBoth()
	<-done
}

func copyBuffered(dst io.Writer, src io.Reader) {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	_, _ = io.CopyBuffer(dst, src, *bp)
}
