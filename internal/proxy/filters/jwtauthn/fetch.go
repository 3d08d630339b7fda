package jwtauthn

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/trellis-mesh/trellis/internal/proxy/upstream"
)

// Envoy's defaults for remote_jwks.
const (
	defaultCacheDuration = 5 * time.Minute
	defaultFailedRefetch = time.Second
	maxJWKSSize          = 1 << 20
	// kidRefetchInterval bounds the extra fetches a token with an unknown kid causes: at most one
	// per provider per interval, so a flood of made-up kids cannot hammer the JWKS server while a
	// key rotated in at the issuer is picked up within seconds instead of at cache expiry.
	kidRefetchInterval = 5 * time.Second
)

// remoteJWKS is a provider's remote_jwks: the key set fetched through the proxy's own cluster
// (EDS, DNS, load balancing and the cluster's TLS apply), cached for cache_duration.
//
// Without async_fetch a request that finds no keys, or expired ones, waits for a fetch (one at a
// time per provider; concurrent requests share it) and fails with JwksFetchFail if it fails. With
// async_fetch expired keys keep serving while a refresh runs in the background, retried every
// failed_refetch_duration; only the very first fetch is waited for (Envoy starts it when the
// listener is built, trellis-proxy on the first request).
type remoteJWKS struct {
	cluster, authority, path string
	timeout                  time.Duration
	cacheDuration            time.Duration
	async                    bool
	failedRefetch            time.Duration
	retries                  int
	// onNewKeys runs after a fetch replaced the keys (the provider drops its verified tokens).
	onNewKeys func()

	state atomic.Pointer[jwksState]

	mu       sync.Mutex
	inflight *fetchCall
}

type jwksState struct {
	keys      *keySet
	fetched   time.Time // when keys arrived
	failed    time.Time // last failed fetch, zero after a success
	lastFetch time.Time // last fetch started, for the unknown-kid rate limit
}

type fetchCall struct {
	done chan struct{}
	keys *keySet
	err  error
}

func newRemoteJWKS(uri, cluster string, timeout, cacheDuration time.Duration) (*remoteJWKS, error) {
	u, err := url.Parse(uri)
	if err != nil {
		return nil, fmt.Errorf("http_uri.uri %q: %w", uri, err)
	}
	if u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, fmt.Errorf("http_uri.uri %q: an absolute http or https URL is required", uri)
	}
	path := u.EscapedPath()
	if path == "" {
		path = "/"
	}
	if u.RawQuery != "" {
		path += "?" + u.RawQuery
	}
	if cacheDuration <= 0 {
		cacheDuration = defaultCacheDuration
	}
	return &remoteJWKS{cluster: cluster, authority: u.Host, path: path, timeout: timeout, cacheDuration: cacheDuration, failedRefetch: defaultFailedRefetch}, nil
}

// errFetch is what a failed fetch reports to the verifier (JwksFetchFail); the detail goes to the
// debug log only.
var errFetch = errors.New("JWKS fetch failed")

// keys returns the key set to verify with, fetching it when needed. clusters and st come from the
// filter instance serving the request.
func (r *remoteJWKS) keys(ctx context.Context, f *Filter) (*keySet, Status) {
	now := time.Now()
	s := r.state.Load()
	if s != nil && s.keys != nil {
		fresh := now.Sub(s.fetched) < r.cacheDuration
		if fresh {
			return s.keys, OK
		}
		if r.async {
			if s.failed.IsZero() || now.Sub(s.failed) >= r.failedRefetch {
				r.start(f) // refresh in the background; the old keys serve meanwhile
			}
			return s.keys, OK
		}
	}
	c := r.start(f)
	select {
	case <-c.done:
	case <-ctx.Done():
		return nil, JwksFetchFail
	}
	if c.err != nil {
		return nil, JwksFetchFail
	}
	return c.keys, OK
}

// refetchForKid fetches again for a token whose kid the current keys lack, at most once per
// kidRefetchInterval; it reports whether new keys came.
func (r *remoteJWKS) refetchForKid(ctx context.Context, f *Filter, kid string) (*keySet, bool) {
	s := r.state.Load()
	if s == nil || kid == "" || s.keys == nil || s.keys.hasKid(kid) || time.Since(s.lastFetch) < kidRefetchInterval {
		return nil, false
	}
	c := r.start(f)
	select {
	case <-c.done:
	case <-ctx.Done():
		return nil, false
	}
	if c.err != nil {
		return nil, false
	}
	return c.keys, true
}

// start joins the fetch under way or begins one. The fetch runs on its own goroutine, bounded by
// http_uri.timeout per attempt, so that a request giving up does not cancel it for the others.
func (r *remoteJWKS) start(f *Filter) *fetchCall {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.inflight != nil {
		return r.inflight
	}
	c := &fetchCall{done: make(chan struct{})}
	r.inflight = c
	old := r.state.Load()
	began := time.Now()
	r.setState(old, func(s *jwksState) { s.lastFetch = began })
	go func() {
		keys, err := r.fetch(f)
		r.mu.Lock()
		if err != nil {
			f.stats.jwksFetchFailed.Inc()
			f.log.Debug("jwt_authn: JWKS fetch failed", "cluster", r.cluster, "path", r.path, "error", err)
			r.setState(r.state.Load(), func(s *jwksState) { s.failed = time.Now() })
			c.err = errFetch
		} else {
			f.stats.jwksFetchSuccess.Inc()
			r.setState(r.state.Load(), func(s *jwksState) { s.keys, s.fetched, s.failed = keys, time.Now(), time.Time{} })
			c.keys = keys
			if r.onNewKeys != nil {
				r.onNewKeys()
			}
		}
		r.inflight = nil
		r.mu.Unlock()
		close(c.done)
	}()
	return c
}

// setState stores a copy of old changed by edit; r.mu is held.
func (r *remoteJWKS) setState(old *jwksState, edit func(*jwksState)) {
	var s jwksState
	if old != nil {
		s = *old
	}
	edit(&s)
	r.state.Store(&s)
}

func (r *remoteJWKS) fetch(f *Filter) (*keySet, error) {
	var err error
	for attempt := 0; attempt <= r.retries; attempt++ {
		var doc []byte
		if doc, err = r.get(f); err == nil {
			ks, st := parseJWKS(doc)
			if st != OK {
				return nil, errors.New(st.String())
			}
			return ks, nil
		}
	}
	return nil, err
}

// get sends one GET for the JWKS through the cluster, as the tracing exporter sends spans.
func (r *remoteJWKS) get(f *Filter) ([]byte, error) {
	var cl *upstream.Cluster
	if f.clusters != nil {
		cl = f.clusters(r.cluster)
	}
	if cl == nil {
		return nil, fmt.Errorf("cluster %q not found", r.cluster)
	}
	host := cl.Pick()
	if host == nil {
		cl.Stats.NoneHealthy.Inc()
		return nil, fmt.Errorf("cluster %q: no healthy host", r.cluster)
	}
	if !cl.TryRequest() {
		return nil, fmt.Errorf("cluster %q: circuit breaker open (max_requests)", r.cluster)
	}
	defer cl.ReleaseRequest()
	ctx := context.Background()
	if r.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, r.timeout)
		defer cancel()
	}
	req := (&http.Request{
		Method: http.MethodGet, URL: &url.URL{Scheme: "http", Host: host.Target(), Opaque: r.path},
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Header: http.Header{"Accept": {"application/json"}}, Host: r.authority,
	}).WithContext(ctx)
	host.Begin()
	cl.Stats.RqTotal.Inc()
	resp, err := cl.Transport(false).RoundTrip(req)
	if err != nil {
		host.End(true)
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSSize+1))
	host.End(resp.StatusCode >= 500)
	cl.Stats.RecordStatus(resp.StatusCode)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("JWKS server answered %s", resp.Status)
	}
	if len(body) > maxJWKSSize {
		return nil, errors.New("JWKS larger than 1 MiB")
	}
	return body, nil
}
