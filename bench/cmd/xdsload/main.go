// Command xdsload is the control-plane benchmark's load: N ADS clients over
// real gRPC, each one a sidecar as Envoy behaves: it asks for clusters and
// listeners, then for the endpoints of the EDS clusters and the routes the
// listeners name, and ACKs every response. It measures per client the time
// to full config and the bytes received, and for endpoint changes the time
// from the change to each client's receipt. Like Istio's bootstrap, a
// client sends its node on the first request only. Responses are read
// straight from the wire for what the load measures (codec.go), not
// proto-decoded: the load shares the machine's CPUs with the control plane.
//
// It is driven over stdin, one command per line:
//
//	change <id> <cluster> <address> <unix-ns>   an endpoint change was made at unix-ns: time until each client holds a load assignment for cluster with address
//	mark <id>                                   note the bytes and responses received so far, per type, under id
//	profile <file>                              start a CPU profile of the load process into file
//	profile-stop                                end it
//	quit                                        write the summary (JSON) to stdout and exit
//
// and says on stderr, one line each: "converged <ms>" once every client has
// full config, "change-done <id>" once every client has seen change id (or
// -change-timeout passed).
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/experimental"

	"github.com/trellis-mesh/trellis/internal/grpcbuf"
)

var typeOrder = []string{resourcev3.ClusterType, resourcev3.ListenerType, resourcev3.EndpointType, resourcev3.RouteType}

func typeIdx(url string) int { return slices.Index(typeOrder, url) }

func main() {
	addr := flag.String("addr", "127.0.0.1:15010", "control plane's xDS address")
	n := flag.Int("clients", 100, "number of ADS clients")
	mode := flag.String("mode", "sotw", "sotw or delta")
	nsCount := flag.Int("namespaces", 20, "clients are spread over this many namespaces, ns-0 ...")
	changeTimeout := flag.Duration("change-timeout", 10*time.Second, "give up waiting for a change after this long")
	dialRate := flag.Int("dial-parallel", 64, "clients connecting at once")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the load process to this file")
	flag.Parse()
	if *cpuProfile != "" {
		if err := startProfile(*cpuProfile); err != nil {
			log.Fatal(err)
		}
		defer pprof.StopCPUProfile()
	}
	if *mode != "sotw" && *mode != "delta" {
		log.Fatalf("-mode %q: want sotw or delta", *mode)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	start := time.Now()
	clients := make([]*client, *n)
	var wg sync.WaitGroup
	var convergedCount atomic.Int64
	convergedAll := make(chan struct{})
	sem := make(chan struct{}, *dialRate)
	for i := range clients {
		ns := fmt.Sprintf("ns-%d", i%*nsCount)
		ip := fmt.Sprintf("10.%d.%d.%d", 1+i/65536, (i/256)%256, i%256)
		c := &client{
			id:    fmt.Sprintf("sidecar~%s~load-%d.%s~%s.svc.cluster.local", ip, i, ns, ns),
			delta: *mode == "delta",
			start: start,
			onConverged: func() {
				if convergedCount.Add(1) == int64(*n) {
					close(convergedAll)
				}
			},
		}
		clients[i] = c
		wg.Go(func() {
			sem <- struct{}{}
			conn, err := grpc.NewClient(*addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
				grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(1<<30)),
				// Envoy's HTTP/2 flow-control windows (Http2ProtocolOptions
				// defaults: 16 MiB per stream, 24 MiB per connection), not
				// gRPC-Go's 64 KiB that grows by estimate.
				grpc.WithInitialWindowSize(16<<20), grpc.WithInitialConnWindowSize(24<<20),
				// Received frames in buffers that are not cleared (see grpcbuf).
				experimental.WithBufferPool(grpcbuf.Pool))
			<-sem
			if err != nil {
				c.fail(err)
				return
			}
			defer conn.Close()
			c.run(ctx, conn)
		})
	}
	go func() {
		select {
		case <-convergedAll:
			fmt.Fprintf(os.Stderr, "converged %d\n", time.Since(start).Milliseconds())
		case <-ctx.Done():
		}
	}()

	sum := summary{Mode: *mode, Clients: *n, Marks: map[string]mark{}}
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		f := strings.Fields(in.Text())
		if len(f) == 0 {
			continue
		}
		switch f[0] {
		case "change":
			if len(f) != 5 {
				log.Fatalf("change: want id cluster address unix-ns, got %q", in.Text())
			}
			ns, _ := strconv.ParseInt(f[4], 10, 64)
			ch := &change{id: f[1], cluster: f[2], addr: []byte(f[3]), at: time.Unix(0, ns)}
			sum.Changes = append(sum.Changes, waitChange(clients, ch, *changeTimeout))
			fmt.Fprintf(os.Stderr, "change-done %s\n", f[1])
		case "mark":
			sum.Marks[f[1]] = takeMark(clients)
		case "profile":
			if err := startProfile(f[1]); err != nil {
				log.Printf("profile: %v", err)
			}
		case "profile-stop":
			pprof.StopCPUProfile()
		case "quit":
			cancel()
			sum.finish(clients, start)
			enc := json.NewEncoder(os.Stdout)
			enc.SetIndent("", "  ")
			if err := enc.Encode(sum); err != nil {
				log.Fatal(err)
			}
			done := make(chan struct{})
			go func() { wg.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
			}
			return
		}
	}
}

// startProfile starts a CPU profile into file; the file is closed when the
// process exits.
func startProfile(file string) error {
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	return pprof.StartCPUProfile(f)
}

// change is one endpoint change the driver made.
type change struct {
	id      string
	cluster string
	addr    []byte
	at      time.Time
}

type changeResult struct {
	ID       string  `json:"id"`
	Cluster  string  `json:"cluster"`
	Received int     `json:"received"` // clients that got it
	Missed   int     `json:"missed"`   // clients that did not within the timeout
	P50ms    float64 `json:"p50_ms"`
	P99ms    float64 `json:"p99_ms"`
	MaxMs    float64 `json:"max_ms"`
	// LatenciesMs is every receiving client's latency, sorted.
	LatenciesMs []float64 `json:"-"`
}

func waitChange(clients []*client, ch *change, timeout time.Duration) changeResult {
	for _, c := range clients {
		c.expect(ch)
	}
	deadline := time.Now().Add(timeout)
	var lat []float64
	for {
		lat = lat[:0]
		for _, c := range clients {
			if d, ok := c.seen(ch); ok {
				lat = append(lat, float64(d.Microseconds())/1000)
			}
		}
		if len(lat) == len(clients) || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	slices.Sort(lat)
	r := changeResult{ID: ch.id, Cluster: ch.cluster, Received: len(lat), Missed: len(clients) - len(lat), LatenciesMs: lat}
	if len(lat) > 0 {
		r.P50ms, r.P99ms, r.MaxMs = pct(lat, 0.50), pct(lat, 0.99), lat[len(lat)-1]
	}
	return r
}

func pct(sorted []float64, p float64) float64 {
	i := int(float64(len(sorted))*p+0.5) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// mark is the traffic received by all clients up to a moment, per type.
type mark struct {
	Bytes     map[string]int64 `json:"bytes"`
	Responses map[string]int64 `json:"responses"`
	Resources map[string]int64 `json:"resources"`
}

func takeMark(clients []*client) mark {
	m := mark{Bytes: map[string]int64{}, Responses: map[string]int64{}, Resources: map[string]int64{}}
	for _, c := range clients {
		c.mu.Lock()
		for i, url := range typeOrder {
			k := shortName(url)
			m.Bytes[k] += c.bytes[i]
			m.Responses[k] += c.responses[i]
			m.Resources[k] += c.resources[i]
		}
		c.mu.Unlock()
	}
	return m
}

func shortName(url string) string { return url[strings.LastIndexByte(url, '.')+1:] }

type summary struct {
	Mode    string `json:"mode"`
	Clients int    `json:"clients"`
	// Converged is how many clients reached full config; ConvergeMs the
	// time from the first dial until the last of them did.
	Converged    int     `json:"converged"`
	Failed       int     `json:"failed"`
	ConvergeMs   float64 `json:"converge_ms"`
	ClientP50ms  float64 `json:"client_full_config_p50_ms"`
	ClientP99ms  float64 `json:"client_full_config_p99_ms"`
	BytesPerInit float64 `json:"bytes_per_client_full_config"`
	// TotalBytes is every byte of resources received, whole run.
	TotalBytes int64           `json:"total_bytes"`
	Changes    []changeResult  `json:"changes"`
	Marks      map[string]mark `json:"marks"`
	Errors     []string        `json:"errors,omitempty"`
	// Waiting describes up to five clients that neither converged nor
	// failed: what they received per type (CDS, LDS, EDS, RDS).
	Waiting []string `json:"waiting,omitempty"`
	// AllLatenciesMs pools every client's latency over every change.
	AllP50ms float64 `json:"change_all_p50_ms"`
	AllP99ms float64 `json:"change_all_p99_ms"`
}

func (s *summary) finish(clients []*client, start time.Time) {
	var full []float64
	var initBytes int64
	for _, c := range clients {
		c.mu.Lock()
		if !c.convergedAt.IsZero() {
			s.Converged++
			d := c.convergedAt.Sub(start)
			full = append(full, float64(c.convergedAt.Sub(c.dialAt).Microseconds())/1000)
			s.ConvergeMs = max(s.ConvergeMs, float64(d.Microseconds())/1000)
			initBytes += c.initBytes
		}
		if c.convergedAt.IsZero() && c.err == nil && len(s.Waiting) < 5 {
			s.Waiting = append(s.Waiting, fmt.Sprintf("%s: responses %v, resources %v, EDS asked %d, RDS asked %d",
				c.id, c.responses, c.resources, len(c.wantEDS), len(c.wantRDS)))
		}
		if c.err != nil {
			s.Failed++
			if len(s.Errors) < 5 {
				s.Errors = append(s.Errors, c.err.Error())
			}
		}
		for _, b := range c.bytes {
			s.TotalBytes += b
		}
		c.mu.Unlock()
	}
	slices.Sort(full)
	if len(full) > 0 {
		s.ClientP50ms, s.ClientP99ms = pct(full, 0.5), pct(full, 0.99)
		s.BytesPerInit = float64(initBytes) / float64(len(full))
	}
	var all []float64
	for _, ch := range s.Changes {
		all = append(all, ch.LatenciesMs...)
	}
	slices.Sort(all)
	if len(all) > 0 {
		s.AllP50ms, s.AllP99ms = pct(all, 0.5), pct(all, 0.99)
	}
}
