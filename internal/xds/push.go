package xds

import (
	"context"
	"maps"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/trellis-mesh/trellis/internal/model"
)

// member is a connected proxy as the push worker sees it.
type member struct {
	st       *proxyState
	proxy    *model.Proxy
	cur      *classSnap
	meshSeq  uint64
	classKey string
	key      string // its class under the new mesh
	shared   bool
}

// push brings every connected proxy to the latest mesh: each class is
// translated once (several at a time), then its streams are woken.
func (s *Server) push(ctx context.Context) {
	m := s.latest.Load()
	if m == nil {
		return
	}
	start := time.Now()
	prev := s.pushed
	s.pushed = m
	var change model.EndpointChange
	endpointsOnly := false
	if prev != nil && s.endpointDelta != nil {
		change, endpointsOnly = s.endpointDelta(prev.snap, m.snap)
	}

	classes := map[string][]member{}
	for _, mb := range s.connected() {
		if mb.meshSeq >= m.seq {
			continue // joined its class for this mesh when it connected
		}
		mb.key, mb.shared = s.classKey(m.snap, mb.proxy)
		classes[mb.key] = append(classes[mb.key], mb)
	}
	keys := slices.Sorted(maps.Keys(classes))
	work := make(chan string)
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), len(keys)) {
		wg.Go(func() {
			for key := range work {
				s.pushClass(m, prev, classes[key], endpointsOnly, change)
			}
		})
	}
	for _, k := range keys {
		if ctx.Err() != nil {
			break
		}
		work <- k
	}
	close(work)
	wg.Wait()
	s.log.Debug("pushed config", "classes", len(keys), "endpoints_only", endpointsOnly, "took", time.Since(start))
}

// pushClass builds one class's snapshot for m and installs it on each of
// its proxies.
func (s *Server) pushClass(m, prev *mesh, members []member, endpointsOnly bool, change model.EndpointChange) {
	slices.SortFunc(members, func(a, b member) int { return strings.Compare(a.proxy.ID, b.proxy.ID) })
	rep := members[0]
	for range members {
		s.metrics.queueTime.Observe(time.Since(m.at).Seconds())
	}
	start := time.Now()
	latest := s.latest.Load()
	var snap *classSnap
	var err error
	if endpointsOnly && inStep(members, prev) && !anyAt(members, change.Addresses) {
		snap, err = s.patchClass(m, rep, change.Hosts)
		if err == nil {
			s.classes.put(m, latest, rep.key, snap)
		} else {
			s.log.Debug("endpoint-only update failed; translating the class in full", "proxy", rep.proxy.ID, "error", err)
		}
	}
	if snap == nil {
		snap, err = s.classes.get(m, latest, rep.key, func() (*classSnap, error) {
			return s.generateOne(m.snap, rep.proxy, rep.cur)
		})
	}
	for _, mb := range members {
		snap, err := snap, err
		if err != nil && mb.shared {
			// The error must name the proxy: translate it on its own.
			snap, err = s.generateOne(m.snap, mb.proxy, mb.cur)
		}
		s.install(mb.st, m, mb.key, snap, err, m.at, start)
	}
}

// inStep reports whether every member holds the same snapshot, built for
// prev under the class key it has now: an endpoint-only change can then
// patch that snapshot.
func inStep(members []member, prev *mesh) bool {
	first := members[0]
	if first.cur == nil || first.meshSeq != prev.seq {
		return false
	}
	for _, mb := range members {
		if mb.cur != first.cur || mb.meshSeq != prev.seq || mb.classKey != mb.key {
			return false
		}
	}
	return true
}

// anyAt reports whether a member's proxy sits at one of addrs (sorted): a
// workload there changed, and with it maybe the proxy's inbound listeners.
func anyAt(members []member, addrs []string) bool {
	for _, mb := range members {
		if _, found := slices.BinarySearch(addrs, mb.proxy.IP); found {
			return true
		}
	}
	return false
}

func (s *Server) patchClass(m *mesh, rep member, hosts []string) (*classSnap, error) {
	clas, err := s.translateEndpointsSafe(m.snap, rep.proxy, hosts)
	if err != nil {
		return nil, err
	}
	return patchEndpoints(rep.cur, clas, encodeCacheOf(m.snap))
}

// connected returns the proxies with at least one open stream.
func (s *Server) connected() []member {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]member, 0, len(s.proxies))
	for _, st := range s.proxies {
		if st.streams > 0 {
			out = append(out, member{st: st, proxy: st.proxy, cur: st.cur, meshSeq: st.meshSeq, classKey: st.classKey})
		}
	}
	return out
}

// reconcile brings one connecting proxy to the latest mesh, joining its
// class's snapshot when one is built.
func (s *Server) reconcile(st *proxyState) {
	m := s.latest.Load()
	if m == nil {
		return // no config yet; the first Update reconciles every proxy
	}
	start := time.Now()
	s.mu.Lock()
	proxy, prev := st.proxy, st.cur
	s.mu.Unlock()
	key, shared := s.classKey(m.snap, proxy)
	snap, err := s.classes.get(m, s.latest.Load(), key, func() (*classSnap, error) {
		return s.generateOne(m.snap, proxy, prev)
	})
	if err != nil && shared {
		snap, err = s.generateOne(m.snap, proxy, prev)
	}
	s.install(st, m, key, snap, err, time.Time{}, start)
}

// install makes snap (built for m) st's config and wakes its streams. A
// failure leaves the previous config in place: a proxy keeps running the
// last config that passed every check, and other proxies are unaffected.
// If the config changes, its convergence is timed from changedAt (zero: a
// proxy connecting, timed not at all).
func (s *Server) install(st *proxyState, m *mesh, key string, snap *classSnap, err error, changedAt, start time.Time) {
	s.mu.Lock()
	if st.forgotten || m.seq < st.meshSeq {
		s.mu.Unlock()
		return
	}
	if err != nil {
		st.lastErr = err.Error()
		s.metrics.internalErrors.Inc()
		s.mu.Unlock()
		s.log.Error("xDS push rejected; proxy keeps its previous config", "proxy", st.proxy.ID, "error", err)
		return
	}
	prevVersions := st.versions
	changed := !maps.Equal(prevVersions, snap.versions)
	st.cur, st.meshSeq, st.classKey = snap, m.seq, key
	st.lastErr = ""
	if changed {
		if prevVersions != nil {
			// A proxy's first config is its connect, whichever goroutine
			// installs it: a push racing the connect is not a change to it.
			s.startPending(st, changedAt)
		}
		st.versions = snap.versions // shared by the class: never mutated
		took := time.Since(start).Seconds()
		for t, url := range typeURLs {
			if prevVersions[url] != snap.versions[url] {
				s.metrics.pushTime[t].Observe(took)
			}
		}
	}
	s.checkConverged(st, false)
	notify := make([]*stream, 0, len(st.members))
	for str := range st.members {
		notify = append(notify, str)
	}
	s.mu.Unlock()
	for _, str := range notify {
		select {
		case str.notify <- struct{}{}:
		default: // a wake-up is pending: it will read the latest
		}
	}
}

// current is st's class snapshot.
func (s *Server) current(st *proxyState) *classSnap {
	s.mu.Lock()
	defer s.mu.Unlock()
	return st.cur
}

// snapshotOf is the class snapshot the server holds for a node ID.
func (s *Server) snapshotOf(id string) *classSnap {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st := s.proxies[id]; st != nil {
		return st.cur
	}
	return nil
}
