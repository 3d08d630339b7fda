package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// The attack subcommand is this binary re-executed under taskset on the load generator's cores,
// so that vegeta never shares the proxy's core. It prints attackStart when the measured phase
// begins and attackEnd when every response is in, then one line of JSON (attackResult): the
// driver samples the proxies' CPU and memory between the two markers.
const (
	maxClientConns = 1000

	attackStart = "MEASURE-START"
	attackEnd   = "MEASURE-END"
)

// attackResult is one constant-rate vegeta run.
type attackResult struct {
	RequestedRate int           `json:"requested_rate"`
	ActualRate    float64       `json:"actual_rate"` // requests sent per second
	Throughput    float64       `json:"throughput"`  // successful responses per second
	Success       float64       `json:"success"`     // fraction of 2xx/3xx
	Requests      uint64        `json:"requests"`
	Duration      time.Duration `json:"duration_ns"`
	// Exact quantiles over every request (vegeta's own tdigest estimates are in Vegeta).
	P50    time.Duration   `json:"p50_ns"`
	P90    time.Duration   `json:"p90_ns"`
	P99    time.Duration   `json:"p99_ns"`
	P999   time.Duration   `json:"p999_ns"`
	Max    time.Duration   `json:"max_ns"`
	Codes  map[string]int  `json:"status_codes"`
	Errs   []string        `json:"errors,omitempty"`
	Vegeta *vegeta.Metrics `json:"vegeta"`
}

func attackMain(args []string) error {
	fs := flag.NewFlagSet("attack", flag.ContinueOnError)
	target := fs.String("url", "", "URL to GET")
	rate := fs.Int("rate", 1000, "requests per second")
	warmup := fs.Duration("warmup", 2*time.Second, "unmeasured attack at the same rate first")
	duration := fs.Duration("duration", 10*time.Second, "measured attack")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *target == "" || *rate <= 0 || *duration <= 0 {
		return errors.New("attack: -url, -rate > 0 and -duration > 0 are required")
	}
	// One client for both phases, so the measured phase finds its connections warm. vegeta's
	// Attacker stops for good after one Attack, hence one Attacker per phase.
	//
	// Connections are capped: against a saturated proxy an uncapped open-loop client opens one
	// per late request, thousands, whose TIME_WAIT ports then starve the next step of the run.
	// Requests beyond the cap wait inside the timed region, so late responses still count.
	client := &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{
			DialContext:         (&net.Dialer{Timeout: 2 * time.Second}).DialContext,
			MaxConnsPerHost:     maxClientConns,
			MaxIdleConnsPerHost: maxClientConns,
			DisableCompression:  true,
		},
	}
	tr := vegeta.NewStaticTargeter(vegeta.Target{Method: http.MethodGet, URL: *target})
	pacer := vegeta.ConstantPacer{Freq: *rate, Per: time.Second}
	if *warmup > 0 {
		for range vegeta.NewAttacker(vegeta.Client(client)).Attack(tr, pacer, *warmup, "warmup") {
		}
	}

	out := bufio.NewWriter(os.Stdout)
	fmt.Fprintln(out, attackStart)
	if err := out.Flush(); err != nil {
		return err
	}
	var (
		m    vegeta.Metrics
		lats = make([]time.Duration, 0, *rate*int(duration.Seconds()+1))
	)
	for res := range vegeta.NewAttacker(vegeta.Client(client)).Attack(tr, pacer, *duration, "measure") {
		m.Add(res)
		lats = append(lats, res.Latency)
	}
	m.Close()
	fmt.Fprintln(out, attackEnd)

	r := attackResult{
		RequestedRate: *rate,
		ActualRate:    m.Rate,
		Throughput:    m.Throughput,
		Success:       m.Success,
		Requests:      m.Requests,
		Duration:      m.Duration,
		Codes:         m.StatusCodes,
		Vegeta:        &m,
	}
	if len(m.Errors) > 5 {
		r.Errs = m.Errors[:5]
	} else {
		r.Errs = m.Errors
	}
	slices.Sort(lats)
	r.P50, r.P90, r.P99, r.P999 = quantile(lats, 0.50), quantile(lats, 0.90), quantile(lats, 0.99), quantile(lats, 0.999)
	if len(lats) > 0 {
		r.Max = lats[len(lats)-1]
	}
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	out.Write(b)
	out.WriteByte('\n')
	return out.Flush()
}

// quantile is the nearest-rank q-quantile of sorted samples.
func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(q*float64(len(sorted))+0.999999999) - 1
	return sorted[max(0, min(rank, len(sorted)-1))]
}

// runAttack runs the attack subcommand pinned to cpus and calls onStart and onEnd at its markers.
func runAttack(ctx context.Context, ps *procs, cpus string, gomaxprocs int, url string, rate int, warmup, duration time.Duration,
	onStart, onEnd func()) (*attackResult, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, warmup+duration+30*time.Second)
	defer cancel()
	argv := []string{self, "attack", "-url", url, "-rate", strconv.Itoa(rate), "-warmup", warmup.String(), "-duration", duration.String()}
	stdout, err := ps.runOutput(ctx, "vegeta", cpus, []string{"GOMAXPROCS=" + strconv.Itoa(gomaxprocs)}, argv, func(line string) {
		switch line {
		case attackStart:
			onStart()
		case attackEnd:
			onEnd()
		}
	})
	if err != nil {
		return nil, err
	}
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	var r attackResult
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &r); err != nil {
		return nil, fmt.Errorf("attack output: %w", err)
	}
	return &r, nil
}
