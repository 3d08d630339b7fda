// Package wrk parses the report wrk (github.com/wg/wrk, Debian's 4.1.0) prints, for the peer
// benchmark's closed-loop maximum-throughput runs.
package wrk

import (
	"bufio"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Result is what one wrk run reports.
type Result struct {
	Requests    int64         `json:"requests"`
	Duration    time.Duration `json:"duration_ns"`
	RPS         float64       `json:"rps"` // "Requests/sec", as wrk computes it
	Non2xx3xx   int64         `json:"non_2xx_3xx"`
	SocketErrs  SocketErrors  `json:"socket_errors"`
	LatencyMean time.Duration `json:"latency_mean_ns"`
	// Percentiles holds the "Latency Distribution" block (only with --latency), keyed by percent:
	// 50, 75, 90, 99.
	Percentiles map[int]time.Duration `json:"latency_percentiles_ns,omitempty"`
}

// SocketErrors is wrk's "Socket errors:" line; absent means all zero.
type SocketErrors struct {
	Connect, Read, Write, Timeout int64
}

// Total is the number of failed socket operations of every kind.
func (e SocketErrors) Total() int64 { return e.Connect + e.Read + e.Write + e.Timeout }

// Parse reads wrk's report. It fails when the summary lines are missing (wrk did not finish).
func Parse(out string) (Result, error) {
	var (
		r                          Result
		sawSummary, sawRPS, inDist bool
	)
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		f := strings.Fields(line)
		var err error
		switch {
		case line == "Latency Distribution":
			inDist = true
			continue
		case inDist && len(f) == 2 && strings.HasSuffix(f[0], "%"):
			p, perr := strconv.Atoi(strings.TrimSuffix(f[0], "%"))
			if perr != nil {
				return Result{}, fmt.Errorf("wrk: latency distribution %q: %w", line, perr)
			}
			d, derr := parseDuration(f[1])
			if derr != nil {
				return Result{}, fmt.Errorf("wrk: latency distribution %q: %w", line, derr)
			}
			if r.Percentiles == nil {
				r.Percentiles = make(map[int]time.Duration, 4)
			}
			r.Percentiles[p] = d
			continue
		case len(f) >= 2 && f[0] == "Latency" && !inDist:
			r.LatencyMean, err = parseDuration(f[1])
		case len(f) >= 4 && f[1] == "requests" && f[2] == "in":
			// "64898 requests in 1.10s, 70.74MB read"
			sawSummary = true
			if r.Requests, err = strconv.ParseInt(f[0], 10, 64); err == nil {
				r.Duration, err = parseDuration(strings.TrimSuffix(f[3], ","))
			}
		case strings.HasPrefix(line, "Non-2xx or 3xx responses:"):
			r.Non2xx3xx, err = strconv.ParseInt(strings.TrimSpace(strings.TrimPrefix(line, "Non-2xx or 3xx responses:")), 10, 64)
		case strings.HasPrefix(line, "Socket errors:"):
			// "Socket errors: connect 0, read 12, write 0, timeout 3"
			_, err = fmt.Sscanf(line, "Socket errors: connect %d, read %d, write %d, timeout %d",
				&r.SocketErrs.Connect, &r.SocketErrs.Read, &r.SocketErrs.Write, &r.SocketErrs.Timeout)
		case strings.HasPrefix(line, "Requests/sec:"):
			sawRPS = true
			r.RPS, err = strconv.ParseFloat(strings.TrimSpace(strings.TrimPrefix(line, "Requests/sec:")), 64)
		}
		if err != nil {
			return Result{}, fmt.Errorf("wrk: %q: %w", line, err)
		}
		inDist = false
	}
	if !sawSummary || !sawRPS {
		return Result{}, fmt.Errorf("wrk: no summary (\"N requests in\" and \"Requests/sec:\") in output %q", out)
	}
	return r, nil
}

// parseDuration reads wrk's durations: "105.00us", "4.13ms", "1.10s", "2.00m", "1.00h".
func parseDuration(s string) (time.Duration, error) {
	units := []struct {
		suffix string
		unit   time.Duration
	}{{"us", time.Microsecond}, {"ms", time.Millisecond}, {"s", time.Second}, {"m", time.Minute}, {"h", time.Hour}}
	for _, u := range units {
		if num, ok := strings.CutSuffix(s, u.suffix); ok {
			v, err := strconv.ParseFloat(num, 64)
			if err != nil {
				return 0, err
			}
			return time.Duration(v * float64(u.unit)), nil
		}
	}
	return 0, fmt.Errorf("duration %q: no unit", s)
}
