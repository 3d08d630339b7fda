// Command xdsload is the control-plane benchmark's load: N ADS clients over
// real gRPC, each one a sidecar as Envoy behaves: it asks for clusters and
// listeners, then for the endpoints of the EDS clusters and the routes the
// listeners name, and ACKs every response. It measures per client the time
// to full config and the bytes received, and for endpoint changes the time
// from the change to each client's receipt.
//
// It is driven over stdin, one command per line:
//
//	change <id> <cluster> <address> <unix-ns>   an endpoint change was made at unix-ns: time until each client holds a load assignment for cluster with address
//	mark <id>                                   note the bytes and responses received so far, per type, under id
//	quit                                        write the summary (JSON) to stdout and exit
//
// and says on stderr, one line each: "converged <ms>" once every client has
// full config, "change-done <id>" once every client has seen change id (or
// -change-timeout passed).
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
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
	flag.Parse()
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
				grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(1<<30)))
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

// client is one simulated sidecar.
type client struct {
	id          string
	delta       bool
	start       time.Time
	onConverged func()

	mu          sync.Mutex
	dialAt      time.Time
	convergedAt time.Time
	initBytes   int64
	err         error
	bytes       [4]int64
	responses   [4]int64
	resources   [4]int64
	// got is, per type, the resource names last received (SotW) or held (delta).
	got [4]map[string]bool
	// want is what the client asked for by name: EDS clusters and RDS routes.
	wantEDS, wantRDS []string
	pending          *change
	pendingSeen      time.Time
}

func (c *client) fail(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	c.mu.Unlock()
}

func (c *client) expect(ch *change) {
	c.mu.Lock()
	c.pending, c.pendingSeen = ch, time.Time{}
	c.mu.Unlock()
}

func (c *client) seen(ch *change) (time.Duration, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pending != ch || c.pendingSeen.IsZero() {
		return 0, false
	}
	return c.pendingSeen.Sub(ch.at), true
}

func (c *client) node() *corev3.Node {
	ns := c.id[strings.LastIndexByte(c.id, '~')+1:]
	ns = ns[:strings.IndexByte(ns, '.')]
	return &corev3.Node{
		Id:      c.id,
		Cluster: "load." + ns,
		Metadata: &structpb.Struct{Fields: map[string]*structpb.Value{
			"INTERCEPTION_MODE": structpb.NewStringValue("REDIRECT"),
			"ISTIO_VERSION":     structpb.NewStringValue("1.28.0"),
			"LABELS": structpb.NewStructValue(&structpb.Struct{Fields: map[string]*structpb.Value{
				"app": structpb.NewStringValue("load"),
			}}),
		}},
	}
}

func (c *client) run(ctx context.Context, conn *grpc.ClientConn) {
	c.mu.Lock()
	c.dialAt = time.Now()
	c.mu.Unlock()
	ads := discoveryv3.NewAggregatedDiscoveryServiceClient(conn)
	var err error
	if c.delta {
		err = c.runDelta(ctx, ads)
	} else {
		err = c.runSotW(ctx, ads)
	}
	if err != nil && ctx.Err() == nil {
		c.fail(err)
	}
}

func (c *client) runSotW(ctx context.Context, ads discoveryv3.AggregatedDiscoveryServiceClient) error {
	st, err := ads.StreamAggregatedResources(ctx)
	if err != nil {
		return err
	}
	node := c.node()
	send := func(r *discoveryv3.DiscoveryRequest) error {
		r.Node = node // sent on every request: cheap, and the server reads only the first
		return st.Send(r)
	}
	for _, url := range typeOrder[:2] {
		if err := send(&discoveryv3.DiscoveryRequest{TypeUrl: url}); err != nil {
			return err
		}
	}
	versions := map[string]string{}
	for {
		r, err := st.Recv()
		if err != nil {
			return err
		}
		now := time.Now()
		url := r.GetTypeUrl()
		t := typeIdx(url)
		if t < 0 {
			continue
		}
		prevWant := c.wants(nextType(t))
		names, follow := c.absorb(t, r.GetResources(), now, false)
		versions[url] = r.GetVersionInfo()
		ack := &discoveryv3.DiscoveryRequest{TypeUrl: url, VersionInfo: r.GetVersionInfo(), ResponseNonce: r.GetNonce()}
		switch url {
		case resourcev3.EndpointType:
			ack.ResourceNames = c.wants(t)
		case resourcev3.RouteType:
			ack.ResourceNames = c.wants(t)
		}
		if err := send(ack); err != nil {
			return err
		}
		// Envoy asks for endpoints and routes once it knows the names.
		if follow != "" && (!slices.Equal(prevWant, names) || versions[follow] == "") {
			if err := send(&discoveryv3.DiscoveryRequest{TypeUrl: follow, ResourceNames: names, VersionInfo: versions[follow]}); err != nil {
				return err
			}
		}
		c.checkConverged(now)
	}
}

func (c *client) runDelta(ctx context.Context, ads discoveryv3.AggregatedDiscoveryServiceClient) error {
	st, err := ads.DeltaAggregatedResources(ctx)
	if err != nil {
		return err
	}
	node := c.node()
	first := true
	send := func(r *discoveryv3.DeltaDiscoveryRequest) error {
		if first {
			r.Node, first = node, false
		}
		return st.Send(r)
	}
	for _, url := range typeOrder[:2] {
		if err := send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: url}); err != nil {
			return err
		}
	}
	for {
		r, err := st.Recv()
		if err != nil {
			return err
		}
		now := time.Now()
		url := r.GetTypeUrl()
		t := typeIdx(url)
		if t < 0 {
			continue
		}
		anys := make([]*anypb.Any, 0, len(r.GetResources()))
		for _, res := range r.GetResources() {
			anys = append(anys, res.GetResource())
		}
		c.mu.Lock()
		if c.got[t] == nil {
			c.got[t] = map[string]bool{}
		}
		for _, res := range r.GetResources() {
			c.got[t][res.GetName()] = true
		}
		for _, name := range r.GetRemovedResources() {
			delete(c.got[t], name)
		}
		c.mu.Unlock()
		prevWant := c.wants(nextType(t))
		names, follow := c.absorb(t, anys, now, true)
		if err := send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: url, ResponseNonce: r.GetNonce()}); err != nil {
			return err
		}
		if follow != "" {
			sub, unsub := diff(prevWant, names)
			if len(sub)+len(unsub) > 0 {
				if err := send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: follow, ResourceNamesSubscribe: sub, ResourceNamesUnsubscribe: unsub}); err != nil {
					return err
				}
			}
		}
		c.checkConverged(now)
	}
}

func nextType(t int) int {
	switch typeOrder[t] {
	case resourcev3.ClusterType:
		return typeIdx(resourcev3.EndpointType)
	case resourcev3.ListenerType:
		return typeIdx(resourcev3.RouteType)
	}
	return -1
}

func diff(prev, next []string) (sub, unsub []string) {
	for _, n := range next {
		if !slices.Contains(prev, n) {
			sub = append(sub, n)
		}
	}
	for _, p := range prev {
		if !slices.Contains(next, p) {
			unsub = append(unsub, p)
		}
	}
	return sub, unsub
}

func (c *client) wants(t int) []string {
	if t < 0 {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch typeOrder[t] {
	case resourcev3.EndpointType:
		return c.wantEDS
	case resourcev3.RouteType:
		return c.wantRDS
	}
	return nil
}

// absorb counts a response's resources and, for clusters and listeners,
// returns the names to ask for next and their type. For endpoints it checks
// the pending change. SotW responses of EDS/RDS carry exactly the names asked
// for, so their names are not decoded.
func (c *client) absorb(t int, anys []*anypb.Any, now time.Time, delta bool) ([]string, string) {
	var size int64
	for _, a := range anys {
		size += int64(len(a.GetValue()))
	}
	c.mu.Lock()
	c.bytes[t] += size
	c.responses[t]++
	c.resources[t] += int64(len(anys))
	if c.convergedAt.IsZero() {
		c.initBytes += size
	}
	ch := c.pending
	if ch != nil && c.pendingSeen.IsZero() && typeOrder[t] == resourcev3.EndpointType {
		for _, a := range anys {
			// The cluster name and the new address both appear verbatim in
			// the encoded assignment; no need to decode all of them.
			if bytes.Contains(a.GetValue(), ch.addr) && bytes.Contains(a.GetValue(), []byte(ch.cluster)) {
				c.pendingSeen = now
				break
			}
		}
	}
	if !delta && (typeOrder[t] == resourcev3.EndpointType || typeOrder[t] == resourcev3.RouteType) {
		c.got[t] = map[string]bool{"": len(anys) > 0}
	}
	c.mu.Unlock()

	switch typeOrder[t] {
	case resourcev3.ClusterType:
		var names []string
		for _, a := range anys {
			if name, eds := edsCluster(a.GetValue()); eds {
				names = append(names, name)
			}
		}
		slices.Sort(names)
		c.mu.Lock()
		if delta && len(c.wantEDS) > 0 {
			// Delta: a response carries only changed clusters; keep the union.
			names = slices.Compact(slices.Sorted(slices.Values(append(names, c.wantEDS...))))
		}
		c.wantEDS = names
		names = slices.Clone(names)
		c.mu.Unlock()
		return names, resourcev3.EndpointType
	case resourcev3.ListenerType:
		var names []string
		for _, a := range anys {
			var l listenerv3.Listener
			if err := a.UnmarshalTo(&l); err != nil {
				continue
			}
			for _, fc := range l.GetFilterChains() {
				for _, f := range fc.GetFilters() {
					var h hcmv3.HttpConnectionManager
					if f.GetTypedConfig().MessageIs(&h) && f.GetTypedConfig().UnmarshalTo(&h) == nil {
						if n := h.GetRds().GetRouteConfigName(); n != "" && !slices.Contains(names, n) {
							names = append(names, n)
						}
					}
				}
			}
		}
		slices.Sort(names)
		c.mu.Lock()
		if delta {
			for _, n := range c.wantRDS {
				if !slices.Contains(names, n) {
					names = append(names, n)
				}
			}
			slices.Sort(names)
		}
		c.wantRDS = names
		c.mu.Unlock()
		return names, resourcev3.RouteType
	}
	return nil, ""
}

// checkConverged notes the first moment the client holds clusters,
// listeners, and the endpoints and routes of every name it asked for.
func (c *client) checkConverged(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.convergedAt.IsZero() {
		return
	}
	for t := range typeOrder {
		if c.responses[t] == 0 && !(typeOrder[t] == resourcev3.RouteType && len(c.wantRDS) == 0) {
			return
		}
	}
	if c.delta {
		for _, n := range c.wantEDS {
			if !c.got[typeIdx(resourcev3.EndpointType)][n] {
				return
			}
		}
		for _, n := range c.wantRDS {
			if !c.got[typeIdx(resourcev3.RouteType)][n] {
				return
			}
		}
	}
	c.convergedAt = now
	go c.onConverged()
}

// edsCluster reads a Cluster's name (field 1) and whether its discovery
// type (field 2) is EDS from its encoding, without decoding the rest: the
// load process shares the machine's CPUs with the control plane it
// measures, and decoding 1.6 GB of clusters (their TLS contexts and
// metadata structs) at 2000 clients was most of its CPU. Envoy decodes
// everything; what the control plane sends is the same either way.
func edsCluster(b []byte) (name string, eds bool) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return "", false
		}
		b = b[n:]
		switch {
		case num == 1 && typ == protowire.BytesType:
			v, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return "", false
			}
			name, b = string(v), b[m:]
			continue
		case num == 2 && typ == protowire.VarintType:
			v, m := protowire.ConsumeVarint(b)
			if m < 0 {
				return "", false
			}
			eds, b = v == uint64(clusterv3.Cluster_EDS), b[m:]
			continue
		}
		m := protowire.ConsumeFieldValue(num, typ, b)
		if m < 0 {
			return "", false
		}
		b = b[m:]
	}
	return name, eds
}
