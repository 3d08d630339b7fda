package upstream

import (
	"slices"
	"strconv"
	"strings"

	"github.com/cespare/xxhash/v2"
)

// ring is Envoy's ring hash (ring_hash_lb.cc): each host gets hashes in proportion to its
// normalized weight, scaled so the lightest host has a whole number of them and the ring holds at
// least minSize (at most maxSize) entries; a request goes to the first entry at or after its hash.
type ring struct {
	hashes []uint64
	hosts  []*Host
}

func newRing(hosts []*Host, weights []float64, minSize, maxSize uint64) *ring {
	r := &ring{}
	if len(hosts) == 0 {
		return r
	}
	minW := 1.0
	for _, w := range weights {
		if w > 0 {
			minW = min(minW, w)
		}
	}
	scale := min(ceil(minW*float64(minSize))/minW, float64(maxSize))
	size := uint64(ceil(scale))
	type entry struct {
		hash uint64
		host *Host
	}
	entries := make([]entry, 0, size)
	var key []byte
	current, target := 0.0, 0.0
	for i, h := range hosts {
		// Envoy hashes "<address>_<n>" with XXH64, seed 0.
		key = append(key[:0], h.Address...)
		key = append(key, '_')
		base := len(key)
		target += scale * weights[i]
		for n := uint64(0); current < target; n++ {
			key = strconv.AppendUint(key[:base], n, 10)
			entries = append(entries, entry{xxhash.Sum64(key), h})
			current++
		}
	}
	slices.SortStableFunc(entries, func(a, b entry) int {
		switch {
		case a.hash < b.hash:
			return -1
		case a.hash > b.hash:
			return 1
		}
		return 0
	})
	r.hashes = make([]uint64, len(entries))
	r.hosts = make([]*Host, len(entries))
	for i, e := range entries {
		r.hashes[i], r.hosts[i] = e.hash, e.host
	}
	return r
}

func ceil(x float64) float64 {
	i := float64(int64(x))
	if i < x {
		return i + 1
	}
	return i
}

func (r *ring) lookup(hash uint64) *Host {
	n := len(r.hashes)
	if n == 0 {
		return nil
	}
	// Binary search for the first entry whose hash is >= the request's, wrapping around.
	lo, hi := 0, n
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if r.hashes[m] < hash {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo == n {
		lo = 0
	}
	return r.hosts[lo]
}

// maglevTable is Envoy's Maglev (maglev_lb.cc, after Google's paper): each host, in address order,
// walks its own permutation of the table's slots (offset and skip from XXH64 of its address with
// seeds 0 and 1) and claims the next free one in turn, heavier hosts more often, until the table
// is full.
type maglevTable struct {
	table []*Host
}

func newMaglev(hosts []*Host, weights []float64, size uint64) *maglevTable {
	m := &maglevTable{}
	type entry struct {
		host                 *Host
		offset, skip, next   uint64
		weight, targetWeight float64
	}
	entries := make([]entry, 0, len(hosts))
	maxW := 0.0
	for i, h := range hosts {
		if weights[i] <= 0 {
			continue // a host of a locality without weight gets no slot
		}
		d := xxhash.NewWithSeed(1)
		_, _ = d.WriteString(h.Address)
		entries = append(entries, entry{
			host:   h,
			offset: xxhash.Sum64String(h.Address) % size,
			skip:   d.Sum64()%(size-1) + 1,
			weight: weights[i],
		})
		maxW = max(maxW, weights[i])
	}
	if len(entries) == 0 {
		return m
	}
	// Envoy fills the table in address order, so the table does not depend on EDS's host order.
	slices.SortFunc(entries, func(a, b entry) int { return strings.Compare(a.host.Address, b.host.Address) })
	m.table = make([]*Host, size)
	filled := uint64(0)
	for iteration := 1.0; filled < size; iteration++ {
		for i := range entries {
			if filled >= size {
				break
			}
			e := &entries[i]
			// A host of the largest weight claims a slot every round; one of a third of it every
			// third round.
			if iteration*e.weight < e.targetWeight {
				continue
			}
			e.targetWeight += maxW
			c := (e.offset + e.skip*e.next) % size
			for m.table[c] != nil {
				e.next++
				c = (e.offset + e.skip*e.next) % size
			}
			m.table[c] = e.host
			e.next++
			filled++
		}
	}
	return m
}

func (m *maglevTable) lookup(hash uint64) *Host {
	if len(m.table) == 0 {
		return nil
	}
	return m.table[hash%uint64(len(m.table))]
}
