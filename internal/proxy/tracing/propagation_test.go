package tracing

import (
	"net/http"
	"testing"
)

func TestTraceparentParsesAsTheW3CSpecSays(t *testing.T) {
	for _, tc := range []struct {
		in      string
		ok      bool
		sampled bool
	}{
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", true, true},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", true, false},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03", true, true},     // unknown flags kept
		{"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xyz", true, true}, // a later version may append
		{"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", true, true},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-", false, false}, // version 00 is exactly 55
		{"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false, false},
		{"00-00000000000000000000000000000000-00f067aa0ba902b7-01", false, false},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", false, false},
		{"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", false, false},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7", false, false},
		{"00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false, false},
		{"", false, false},
	} {
		c, err := ParseTraceparent(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("%q: err %v, want ok=%v", tc.in, err, tc.ok)
			continue
		}
		if tc.ok && c.Sampled != tc.sampled {
			t.Errorf("%q: sampled %v, want %v", tc.in, c.Sampled, tc.sampled)
		}
	}
	c, _ := ParseTraceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	if got := string(AppendTraceparent(nil, c.TraceID, c.SpanID, true)); got != "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01" {
		t.Errorf("round trip gave %q", got)
	}
}

func TestB3SingleAndMultiHeadersParseAsEnvoyReadsThem(t *testing.T) {
	for _, tc := range []struct {
		name                     string
		hdr                      map[string]string
		found, ok                bool
		trace, span, parent      string
		sampled, hasSampled, b64 bool
	}{
		{name: "multi 64-bit", hdr: map[string]string{"X-B3-Traceid": "463ac35c9f6413ad", "X-B3-Spanid": "a2fb4a1d1a96d312", "X-B3-Parentspanid": "0020000000000001", "X-B3-Sampled": "1"},
			found: true, ok: true, trace: "463ac35c9f6413ad", span: "a2fb4a1d1a96d312", parent: "0020000000000001", sampled: true, hasSampled: true},
		{name: "multi 128-bit, no sampling", hdr: map[string]string{"X-B3-Traceid": "80f198ee56343ba864fe8b2a57d3eff7", "X-B3-Spanid": "e457b5a2e4d86bd1"},
			found: true, ok: true, trace: "80f198ee56343ba864fe8b2a57d3eff7", span: "e457b5a2e4d86bd1"},
		{name: "multi trace without span", hdr: map[string]string{"X-B3-Traceid": "463ac35c9f6413ad"}, found: true},
		{name: "single full", hdr: map[string]string{"B3": "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90"},
			found: true, ok: true, trace: "80f198ee56343ba864fe8b2a57d3eff7", span: "e457b5a2e4d86bd1", parent: "05e3ac9a4f6e3b90", sampled: true, hasSampled: true},
		{name: "single wins over multi", hdr: map[string]string{"B3": "463ac35c9f6413ad-a2fb4a1d1a96d312-0", "X-B3-Traceid": "80f198ee56343ba864fe8b2a57d3eff7", "X-B3-Spanid": "e457b5a2e4d86bd1"},
			found: true, ok: true, trace: "463ac35c9f6413ad", span: "a2fb4a1d1a96d312", hasSampled: true},
		{name: "single sampling only", hdr: map[string]string{"B3": "0"}, ok: true, hasSampled: true},
		{name: "single debug", hdr: map[string]string{"B3": "d"}, ok: true, sampled: true, hasSampled: true},
		{name: "single bad sampling", hdr: map[string]string{"B3": "463ac35c9f6413ad-a2fb4a1d1a96d312-x"}, found: true},
		{name: "sampled without ids", hdr: map[string]string{"X-B3-Sampled": "0"}, ok: true, hasSampled: true},
		{name: "flags debug", hdr: map[string]string{"X-B3-Flags": "1"}, ok: true, sampled: true, hasSampled: true},
		{name: "zero trace", hdr: map[string]string{"X-B3-Traceid": "0000000000000000", "X-B3-Spanid": "a2fb4a1d1a96d312"}, found: true},
	} {
		h := http.Header{}
		for k, v := range tc.hdr {
			h[k] = []string{v}
		}
		c, found, err := ExtractB3(h)
		if found != tc.found || (err == nil) != tc.ok {
			t.Errorf("%s: found %v err %v, want found %v ok %v", tc.name, found, err, tc.found, tc.ok)
			continue
		}
		if !tc.ok {
			continue
		}
		if c.Sampled != tc.sampled || c.HasSampled != tc.hasSampled {
			t.Errorf("%s: sampled %v/%v, want %v/%v", tc.name, c.Sampled, c.HasSampled, tc.sampled, tc.hasSampled)
		}
		if !found {
			continue
		}
		if got := string(AppendB3TraceID(nil, c.TraceID)); got != tc.trace {
			t.Errorf("%s: trace %s, want %s", tc.name, got, tc.trace)
		}
		if got := string(appendHex(nil, c.SpanID[:])); got != tc.span {
			t.Errorf("%s: span %s, want %s", tc.name, got, tc.span)
		}
		if tc.parent != "" {
			if got := string(appendHex(nil, c.ParentID[:])); got != tc.parent {
				t.Errorf("%s: parent %s, want %s", tc.name, got, tc.parent)
			}
		}
	}
}

func TestTracestateIsCarriedWithTraceparent(t *testing.T) {
	h := http.Header{"Traceparent": {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}, "Tracestate": {"a=1", "b=2"}}
	c, found, err := ExtractW3C(h)
	if err != nil || !found || c.TraceState != "a=1,b=2" {
		t.Fatalf("got %+v %v %v", c, found, err)
	}
	h["Traceparent"] = append(h["Traceparent"], h["Traceparent"][0])
	if _, _, err := ExtractW3C(h); err == nil {
		t.Fatal("two traceparent headers were accepted")
	}
}

// FuzzTraceparent: the parser never panics, and whatever it accepts renders back to a valid
// version-00 traceparent with the same IDs and sampling.
func FuzzTraceparent(f *testing.F) {
	for _, s := range []string{
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-extra",
		"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		"00-00000000000000000000000000000000-0000000000000000-00", "",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseTraceparent(s)
		if err != nil {
			return
		}
		out := string(AppendTraceparent(nil, c.TraceID, c.SpanID, c.Sampled))
		again, err := ParseTraceparent(out)
		if err != nil || again.TraceID != c.TraceID || again.SpanID != c.SpanID || again.Sampled != c.Sampled {
			t.Fatalf("%q parsed, but its rendering %q does not round-trip: %v", s, out, err)
		}
	})
}

// FuzzB3 covers both B3 forms: the single header and the x-b3-* set; accepted contexts have
// non-zero IDs and render back to what was parsed.
func FuzzB3(f *testing.F) {
	f.Add("80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90", "", "", "", "")
	f.Add("d", "", "", "", "")
	f.Add("", "463ac35c9f6413ad", "a2fb4a1d1a96d312", "0020000000000001", "1")
	f.Add("", "80f198ee56343ba864fe8b2a57d3eff7", "e457b5a2e4d86bd1", "", "true")
	f.Fuzz(func(t *testing.T, single, trace, span, parent, sampled string) {
		h := http.Header{}
		for k, v := range map[string]string{"B3": single, "X-B3-Traceid": trace, "X-B3-Spanid": span, "X-B3-Parentspanid": parent, "X-B3-Sampled": sampled} {
			if v != "" {
				h[k] = []string{v}
			}
		}
		c, found, err := ExtractB3(h)
		if err != nil || !found {
			return
		}
		if c.TraceID.IsZero() || c.SpanID.IsZero() {
			t.Fatalf("accepted zero IDs from %v", h)
		}
		single2 := string(AppendB3TraceID(nil, c.TraceID)) + "-" + string(appendHex(nil, c.SpanID[:]))
		again, found, err := ParseB3Single(single2)
		if err != nil || !found || again.TraceID != c.TraceID || again.SpanID != c.SpanID {
			t.Fatalf("%v parsed, but %q does not round-trip: %v", h, single2, err)
		}
	})
}
