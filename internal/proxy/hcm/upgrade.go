package hcm

import (
	"io"
	"net/http"
	"strings"
	"sync"

	"github.com/trellis-mesh/trellis/internal/proxy/upstream"
)

// HTTP Upgrade (WebSocket and others), as Envoy's upgrade_configs: a request asking to upgrade is
// forwarded with its Upgrade and Connection headers when the connection manager enables that
// upgrade type, and refused with 403 otherwise. On 101 Switching Protocols both connections are
// spliced until either side closes. Upgrades ride HTTP/1.1 only (HTTP/2's extended CONNECT is not
// supported), so the upstream leg always uses the cluster's HTTP/1.1 transport.

// checkUpgrade returns the upgrade type r asks for ("" for none). It answers 403 itself, and
// reports refused, when the type is not enabled (Envoy's upgrade_failed).
func (h *Handler) checkUpgrade(w http.ResponseWriter, r *http.Request) (typ string, refused bool) {
	typ = upgradeType(r)
	if typ == "" || h.cfg.UpgradeEnabled(typ) {
		return typ, false
	}
	h.localReply(w, r, http.StatusForbidden, "")
	return "", true
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

// proxyUpgrade sends out (which hop-by-hop removal has stripped) upstream as an upgrade to typ,
// and on 101 splices the connections. It reports whether the upstream failed.
func (h *Handler) proxyUpgrade(w http.ResponseWriter, r, out *http.Request, typ string, cl *upstream.Cluster) (failed bool) {
	out.Header.Set("Connection", "Upgrade")
	out.Header.Set("Upgrade", typ)
	tr := cl.Transport(false)
	if t, ok := tr.(*http.Transport); ok && t.Protocols != nil && !t.Protocols.HTTP1() {
		tr = nil
	}
	if tr == nil {
		cl.Stats.RecordStatus(http.StatusServiceUnavailable)
		h.localReply(w, r, http.StatusServiceUnavailable, bodyReset)
		return true
	}
	resp, err := tr.RoundTrip(out)
	if err != nil {
		h.upstreamFailure(out.Context(), w, r, cl, err)
		return true
	}
	defer resp.Body.Close()
	cl.Stats.RecordStatus(resp.StatusCode)
	if resp.StatusCode != http.StatusSwitchingProtocols {
		// The upstream declined: its answer goes back as an ordinary response.
		dst := w.Header()
		for k, vs := range resp.Header {
			dst[k] = vs
		}
		removeHopByHop(dst)
		w.WriteHeader(resp.StatusCode)
		h.stats.RqClass.Record(resp.StatusCode)
		_, _ = io.Copy(w, resp.Body)
		return resp.StatusCode >= 500
	}
	upConn, ok := resp.Body.(io.ReadWriteCloser)
	if !ok {
		h.localReply(w, r, http.StatusBadGateway, bodyReset)
		return true
	}
	down, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		h.localReply(w, r, http.StatusInternalServerError, "upgrade_failed")
		return true
	}
	defer down.Close()
	h.stats.RqClass.Record(http.StatusSwitchingProtocols)
	// The 101 goes down as the upstream sent it, Upgrade and Connection included.
	_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\n")
	_ = resp.Header.Write(brw)
	_, _ = brw.WriteString("\r\n")
	if brw.Flush() != nil {
		return false
	}
	splice(down, brw.Reader, upConn)
	return false
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
