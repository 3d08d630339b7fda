package wrk

import (
	"testing"
	"time"
)

// Output of Debian's wrk 4.1.0 with --latency.
const withLatency = `Running 1s test @ http://127.0.0.1:18099/
  1 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   384.59us    0.90ms  14.11ms   91.41%
    Req/Sec    59.42k    10.45k   76.45k    72.73%
  Latency Distribution
     50%  105.00us
     75%  175.00us
     90%    0.99ms
     99%    4.13ms
  64898 requests in 1.10s, 70.74MB read
Requests/sec:  59037.58
Transfer/sec:     64.35MB
`

const withErrors = `Running 10s test @ http://127.0.0.1:18099/404
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   474.80us    1.05ms  16.07ms   88.67%
    Req/Sec    71.58k     5.47k   78.46k    54.55%
  78238 requests in 10.00s, 85.81MB read
  Socket errors: connect 0, read 12, write 1, timeout 3
  Non-2xx or 3xx responses: 78000
Requests/sec:   7823.80
Transfer/sec:      7.99MB
`

func TestParseReadsThroughputAndLatencyDistribution(t *testing.T) {
	r, err := Parse(withLatency)
	if err != nil {
		t.Fatal(err)
	}
	if r.Requests != 64898 || r.Duration != 1100*time.Millisecond || r.RPS != 59037.58 {
		t.Fatalf("summary: got %+v", r)
	}
	if r.LatencyMean != 384590*time.Nanosecond {
		t.Errorf("mean latency %v", r.LatencyMean)
	}
	want := map[int]time.Duration{50: 105 * time.Microsecond, 75: 175 * time.Microsecond, 90: 990 * time.Microsecond, 99: 4130 * time.Microsecond}
	for p, d := range want {
		if r.Percentiles[p] != d {
			t.Errorf("p%d = %v, want %v", p, r.Percentiles[p], d)
		}
	}
	if r.Non2xx3xx != 0 || r.SocketErrs.Total() != 0 {
		t.Errorf("errors on a clean run: %+v", r)
	}
}

func TestParseReadsErrorLines(t *testing.T) {
	r, err := Parse(withErrors)
	if err != nil {
		t.Fatal(err)
	}
	if r.Non2xx3xx != 78000 || r.SocketErrs != (SocketErrors{Read: 12, Write: 1, Timeout: 3}) || r.SocketErrs.Total() != 16 {
		t.Fatalf("got %+v", r)
	}
	if r.Percentiles != nil {
		t.Errorf("percentiles without --latency: %v", r.Percentiles)
	}
	if r.RPS != 7823.80 || r.Duration != 10*time.Second {
		t.Errorf("got %+v", r)
	}
}

func TestParseRejectsAnUnfinishedRun(t *testing.T) {
	for _, out := range []string{"", "unable to connect to 127.0.0.1:1 Connection refused\n", withLatency[:300]} {
		if _, err := Parse(out); err == nil {
			t.Errorf("Parse(%q) accepted", out)
		}
	}
}

func TestParseDurationUnits(t *testing.T) {
	for in, want := range map[string]time.Duration{"1.50us": 1500, "2.00ms": 2 * time.Millisecond, "1.10s": 1100 * time.Millisecond, "2.00m": 2 * time.Minute, "1.00h": time.Hour} {
		if got, err := parseDuration(in); err != nil || got != want {
			t.Errorf("parseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := parseDuration("12"); err == nil {
		t.Error("accepted a duration without unit")
	}
}
