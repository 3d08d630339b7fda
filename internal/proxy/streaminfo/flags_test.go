package streaminfo

import "testing"

func TestFlagsPrintInEnvoyOrder(t *testing.T) {
	tests := []struct {
		flags Flags
		want  string
	}{
		{0, "-"},
		{NoHealthyUpstream, "UH"},
		{UpstreamRetryLimitExceeded | UpstreamConnectionFailure, "UF,URX"},
		{FaultInjected | DelayInjected, "DI,FI"},
		{NoRouteFound | RateLimited | UnauthorizedRBAC, "NR,RL,RBAC"},
		{DownstreamRemoteReset, "DR"},
	}
	for _, tt := range tests {
		if got := tt.flags.String(); got != tt.want {
			t.Errorf("Flags(%#x).String() = %q, want %q", uint32(tt.flags), got, tt.want)
		}
	}
}

func TestParseFlagRoundTrips(t *testing.T) {
	for i := range len(shortNames) {
		f := Flags(1 << i)
		got, ok := ParseFlag(f.String())
		if !ok || got != f {
			t.Errorf("ParseFlag(%q) = %#x, %v; want %#x", f.String(), uint32(got), ok, uint32(f))
		}
	}
	if _, ok := ParseFlag("XX"); ok {
		t.Error(`ParseFlag("XX") found a flag`)
	}
}
