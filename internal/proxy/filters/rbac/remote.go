package rbac

import (
	"net/netip"
	"strings"

	"github.com/trellis-mesh/trellis/internal/proxy/route"
)

// remoteAddress is Envoy's downstream remote address, the one remote_ip matches: with
// use_remote_address, the peer, unless xff_num_trusted_hops trusted proxies are in front, in which
// case the X-Forwarded-For entry they vouch for; without it, the X-Forwarded-For entry
// xff_num_trusted_hops from the right (the last by default). The peer when the header has no usable
// entry there.
func remoteAddress(direct netip.Addr, h route.HeaderGetter, useRemoteAddress bool, trustedHops uint32) netip.Addr {
	if h == nil {
		return direct
	}
	skip := trustedHops
	if useRemoteAddress {
		if trustedHops == 0 {
			return direct
		}
		skip = trustedHops - 1
	}
	xff, ok := h.Get("X-Forwarded-For")
	if !ok {
		return direct
	}
	if a, ok := xffEntry(xff, skip); ok {
		return a
	}
	return direct
}

// xffEntry is Envoy's getLastAddressFromXFF: the address skip entries before the last one.
func xffEntry(xff string, skip uint32) (netip.Addr, bool) {
	for range skip {
		i := strings.LastIndexByte(xff, ',')
		if i < 0 {
			return netip.Addr{}, false
		}
		xff = xff[:i]
	}
	if i := strings.LastIndexByte(xff, ','); i >= 0 {
		xff = xff[i+1:]
	}
	a, err := netip.ParseAddr(strings.TrimSpace(xff))
	if err != nil {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}
