package streaminfo

import "strings"

// Flags are Envoy's response flags: why a request ended the way it did. The bit values and the order
// String prints them in are Envoy's (StreamInfo::CoreResponseFlag), so logs read the same.
type Flags uint32

// The response flags, with the short names access logs print.
const (
	FailedLocalHealthCheck           Flags = 1 << iota // LH
	NoHealthyUpstream                                  // UH
	UpstreamRequestTimeout                             // UT
	LocalReset                                         // LR
	UpstreamRemoteReset                                // UR
	UpstreamConnectionFailure                          // UF
	UpstreamConnectionTermination                      // UC
	UpstreamOverflow                                   // UO
	NoRouteFound                                       // NR
	DelayInjected                                      // DI
	FaultInjected                                      // FI
	RateLimited                                        // RL
	UnauthorizedExternalService                        // UAEX
	RateLimitServiceError                              // RLSE
	DownstreamConnectionTermination                    // DC
	UpstreamRetryLimitExceeded                         // URX
	StreamIdleTimeout                                  // SI
	InvalidEnvoyRequestHeaders                         // IH
	DownstreamProtocolError                            // DPE
	UpstreamMaxStreamDurationReached                   // UMSDR
	ResponseFromCacheFilter                            // RFCF
	NoFilterConfigFound                                // NFCF
	DurationTimeout                                    // DT
	UpstreamProtocolError                              // UPE
	NoClusterFound                                     // NC
	OverloadManager                                    // OM
	DNSResolutionFailed                                // DF
	DropOverload                                       // DO
	DownstreamRemoteReset                              // DR
	// UnauthorizedRBAC is Envoy's RBAC denial, which it logs as a response code detail rather than
	// a core flag; Istio surfaces it as "RBAC_ACCESS_DENIED". Kept last so Envoy's bits stay put.
	UnauthorizedRBAC
)

var shortNames = [...]string{
	"LH", "UH", "UT", "LR", "UR", "UF", "UC", "UO", "NR", "DI", "FI", "RL", "UAEX", "RLSE", "DC", "URX",
	"SI", "IH", "DPE", "UMSDR", "RFCF", "NFCF", "DT", "UPE", "NC", "OM", "DF", "DO", "DR", "RBAC",
}

// String is the %RESPONSE_FLAGS% form: short names joined by commas, or "-" when none is set.
func (f Flags) String() string {
	if f == 0 {
		return "-"
	}
	var b strings.Builder
	for i, name := range shortNames {
		if f&(1<<i) == 0 {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(name)
	}
	return b.String()
}

// Has reports whether every flag in g is set.
func (f Flags) Has(g Flags) bool { return f&g == g }

// ParseFlag returns the flag with the given short name ("UH"), and whether there is one.
func ParseFlag(short string) (Flags, bool) {
	for i, name := range shortNames {
		if name == short {
			return 1 << i, true
		}
	}
	return 0, false
}
