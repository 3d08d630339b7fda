package accesslog

import (
	"strings"
	"testing"
)

// FuzzParseFormat feeds format strings (untrusted: they arrive over xDS) to the parser: it must never
// panic, a format it accepts must render, and text without '%' must render as itself.
func FuzzParseFormat(f *testing.F) {
	for _, seed := range []string{DefaultFormat, IstioDefaultFormat, "%START_TIME(%Y-%m-%dT%H:%M:%S.%3fZ)%", "%REQ(X?Y):10%",
		"100%%", "%", "%REQ(", "%START_TIME(%E*S %9f %s)%:", "plain text\n", "%RESP(a)%%TRAILER(b?c)%"} {
		f.Add(seed)
	}
	info := fixedInfo()
	f.Fuzz(func(t *testing.T, format string) {
		segs, err := parseFormat(format)
		if err != nil {
			return
		}
		out := appendText(nil, segs, info, false)
		if !strings.Contains(format, "%") && string(out) != format {
			t.Fatalf("literal %q rendered as %q", format, out)
		}
	})
}
