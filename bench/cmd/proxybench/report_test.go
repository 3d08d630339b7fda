package main

import (
	"strings"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/bench/internal/wrk"
)

func TestReportGivesRatiosToNginxAndJudgesTargets(t *testing.T) {
	p := newPlan(true)
	lat := func(peer string, hops int, p99 time.Duration, cpu float64) run {
		r := run{Scenario: scenarioLatency, Peer: peer, Cores: 1, Hops: hops, Rate: 1000,
			Attack: &attackResult{RequestedRate: 1000, ActualRate: 1000, Throughput: 1000, Success: 1, Requests: 3000, P99: p99}}
		if hops > 0 {
			r.Usage = &usage{CPUPer1000: cpu, Requests: 3000}
		}
		return r
	}
	rep := report{Plan: p, Command: "test", Runs: []run{
		{Scenario: scenarioMaxRPS, Peer: peerTrellis, Cores: 1, Hops: 1, Wrk: &wrk.Result{RPS: 66000}, Usage: &usage{}},
		{Scenario: scenarioMaxRPS, Peer: peerNginx, Cores: 1, Hops: 1, Wrk: &wrk.Result{RPS: 60000}, Usage: &usage{}},
		lat(peerDirect, 0, 1000*time.Microsecond, 0),
		lat(peerTrellis, 1, 1300*time.Microsecond, 0.05), // adds 0.3 ms
		lat(peerNginx, 1, 1200*time.Microsecond, 0.02),   // adds 0.2 ms
		{Scenario: scenarioFootprint, Peer: peerTrellis, Cores: 1, Hops: 1, Clusters: 100, Rate: p.FootprintRate,
			Usage: &usage{IdleRSSKB: 10000, PeakRSSKB: 30000}, Attack: &attackResult{RequestedRate: 5000, ActualRate: 5000, Throughput: 4000}},
	}}
	md := rep.markdown()
	for _, want := range []string{
		"| max rps ≥ 1.0× nginx at 1 core(s) | 66000 rps = 1.10× nginx (60000) | met |",
		"| added p99 at 1000 rps ≤ 1.2× nginx's (1 proxy) | 0.300 ms vs nginx 0.200 ms = 1.50× | **not met** |",
		"| added p99 at 1000 rps ≤ 0.5 ms per hop (1 proxy) | 0.300 ms | met |",
		"| RSS ≤ 20 MB (100 clusters, peak under 5000 rps) | 30.7 MB (idle 10.2 MB) | **not met** |",
		"| ≤ 0.1 vCPU per 1000 rps (1 proxy at 1000 rps) | 0.050 vCPU",
		"| trellis | 66000 | 1.10× |",
		"| trellis (1 proxy) | 1000 | 100.00% |",
		"| 5000 **saturated** |",
		"## What each optimisation bought",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
}
