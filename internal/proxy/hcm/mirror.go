package hcm

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strings"
	"time"

	"github.com/trellis-mesh/trellis/internal/proxy/route"
	"github.com/trellis-mesh/trellis/internal/proxy/upstream"
)

// maxMirrorsInFlight bounds the shadow requests one connection manager has under way: when a
// mirror cluster is slow, further copies are dropped rather than piling up goroutines.
const maxMirrorsInFlight = 64

// mirrorTimeout bounds one shadow request; Envoy gives shadows the route timeout, which may be
// unbounded, and a fire-and-forget copy must not hold a slot forever.
const mirrorTimeout = 30 * time.Second

// mirrorer sends shadow copies of requests (Envoy's request_mirror_policies).
type mirrorer struct {
	slots chan struct{}
	log   *slog.Logger
}

func newMirrorer(log *slog.Logger) *mirrorer {
	return &mirrorer{slots: make(chan struct{}, maxMirrorsInFlight), log: log}
}

// shadow is one mirror copy chosen for a request, sent once the request is done.
type shadow struct {
	cl       *upstream.Cluster
	keepHost bool
}

// pickMirrors samples the route's mirror policies for this request and, when any is chosen and the
// request has a body, starts keeping the body so the copy can carry it.
func (h *Handler) pickMirrors(s *stream, rt *route.Route, snap *Snapshot) []shadow {
	var out []shadow
	for _, m := range rt.Action.Mirrors {
		if m.PerMillion < 1_000_000 && rand.Uint32N(1_000_000) >= m.PerMillion {
			continue
		}
		cl := snap.Clusters[m.Cluster]
		if cl == nil {
			continue // Envoy skips a mirror whose cluster is missing
		}
		out = append(out, shadow{cl: cl, keepHost: m.KeepHost})
	}
	if len(out) > 0 && s.body != nil {
		s.body.Record(bufferLimit(&rt.Action))
	}
	return out
}

// sendMirrors fires the shadow copies of a finished request: its upstream headers and, when it was
// kept whole, its body. A copy whose body did not fit the buffer is not sent. Responses are
// discarded; nothing here can delay or fail the request itself.
func (h *Handler) sendMirrors(r *http.Request, s *stream, path string, shadows []shadow) {
	var body []byte
	if s.body != nil {
		b, whole := s.body.Snapshot()
		if !whole {
			return
		}
		body = b
	}
	for _, sh := range shadows {
		select {
		case h.mirrors.slots <- struct{}{}:
		default:
			h.mirrors.log.Debug("mirror dropped: too many in flight", "cluster", sh.cl.Name())
			continue
		}
		req := h.shadowRequest(r, s, path, sh, body)
		if req == nil {
			<-h.mirrors.slots
			continue
		}
		go h.mirrors.send(sh.cl, req, r.ProtoMajor == 2)
	}
}

func (h *Handler) shadowRequest(r *http.Request, s *stream, path string, sh shadow, body []byte) *http.Request {
	host := sh.cl.Pick()
	if host == nil {
		return nil
	}
	authority := s.ex.authority
	if !sh.keepHost {
		authority = shadowAuthority(authority)
	}
	var rc io.ReadCloser
	if body != nil {
		rc = io.NopCloser(bytes.NewReader(body))
	}
	req := newUpstreamRequest(context.Background(), r, r.Header.Clone(), path, authority, host, rc)
	if body != nil {
		req.ContentLength = int64(len(body))
	}
	return req
}

// send makes one shadow request. It counts in the mirror cluster's stats and takes its circuit
// breaker's request slot like any request to that cluster, as Envoy's shadow requests do.
func (m *mirrorer) send(cl *upstream.Cluster, req *http.Request, h2 bool) {
	defer func() { <-m.slots }()
	if !cl.TryRequest() {
		m.log.Debug("mirror dropped: circuit breaker open", "cluster", cl.Name())
		return
	}
	defer cl.ReleaseRequest()
	cl.Stats.RqTotal.Inc()
	cl.Stats.RqActive.Inc()
	defer cl.Stats.RqActive.Dec()
	ctx, cancel := context.WithTimeout(context.Background(), mirrorTimeout)
	defer cancel()
	resp, err := cl.Transport(h2).RoundTrip(req.WithContext(ctx))
	if err != nil {
		m.log.Debug("mirror request failed", "cluster", cl.Name(), "error", err)
		if ctx.Err() != nil {
			cl.Stats.RqTimeout.Inc()
		}
		cl.Stats.RecordStatus(http.StatusServiceUnavailable)
		return
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	cl.Stats.RecordStatus(resp.StatusCode)
}

// shadowAuthority is Envoy's shadow host: "-shadow" appended to the host, before any port.
func shadowAuthority(a string) string {
	host := a
	port := ""
	if i := strings.LastIndexByte(a, ':'); i >= 0 && !strings.Contains(a[i:], "]") {
		host, port = a[:i], a[i:]
	}
	return host + "-shadow" + port
}
