package intercept

import (
	"net"
	"net/netip"

	"github.com/trellis-mesh/trellis/internal/origdst"
)

// OriginalDst returns where a redirected connection was going (SO_ORIGINAL_DST); see
// origdst.Lookup, which the proxy's use_original_dst listeners use too.
func OriginalDst(conn net.Conn) (netip.AddrPort, error) { return origdst.Lookup(conn) }
