package main

import (
	"context"
	"slices"
	"strings"
	"sync"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/structpb"
)

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
	// namesWire is, per type, the encoding of the names last asked for.
	namesWire [4]namesMemo
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

// pendingChange is the change the client still waits for, if any; the
// codec looks for it in endpoint responses as it decodes them.
func (c *client) pendingChange() *change {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pendingSeen.IsZero() {
		return c.pending
	}
	return nil
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
	st, err := ads.StreamAggregatedResources(ctx, grpc.ForceCodecV2(adsCodec))
	if err != nil {
		return err
	}
	node := c.node()
	first := true
	send := func(r *discoveryv3.DiscoveryRequest, names []string) error {
		// As Istio's bootstrap: set_node_on_first_message_only.
		if first {
			r.Node, first = node, false
		}
		return st.SendMsg(&sotwRequest{head: r, names: c.encodedNames(typeIdx(r.TypeUrl), names)})
	}
	for _, url := range typeOrder[:2] {
		if err := send(&discoveryv3.DiscoveryRequest{TypeUrl: url}, nil); err != nil {
			return err
		}
	}
	versions := map[string]string{}
	r := &response{pending: c.pendingChange}
	for {
		if err := st.RecvMsg(r); err != nil {
			return err
		}
		now := time.Now()
		url := r.typeURL
		t := typeIdx(url)
		if t < 0 {
			continue
		}
		prevWant := c.wants(nextType(t))
		names, follow := c.absorb(t, r, now, false)
		versions[url] = r.version
		ack := &discoveryv3.DiscoveryRequest{TypeUrl: url, VersionInfo: r.version, ResponseNonce: r.nonce}
		var ackNames []string
		if url == resourcev3.EndpointType || url == resourcev3.RouteType {
			ackNames = c.wants(t)
		}
		if err := send(ack, ackNames); err != nil {
			return err
		}
		// Envoy asks for endpoints and routes once it knows the names.
		if follow != "" && (!slices.Equal(prevWant, names) || versions[follow] == "") {
			if err := send(&discoveryv3.DiscoveryRequest{TypeUrl: follow, VersionInfo: versions[follow]}, names); err != nil {
				return err
			}
		}
		c.checkConverged(now)
	}
}

func (c *client) runDelta(ctx context.Context, ads discoveryv3.AggregatedDiscoveryServiceClient) error {
	st, err := ads.DeltaAggregatedResources(ctx, grpc.ForceCodecV2(adsCodec))
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
	r := &response{delta: true, pending: c.pendingChange}
	for {
		if err := st.RecvMsg(r); err != nil {
			return err
		}
		now := time.Now()
		url := r.typeURL
		t := typeIdx(url)
		if t < 0 {
			continue
		}
		c.mu.Lock()
		if c.got[t] == nil {
			c.got[t] = make(map[string]bool, len(r.names))
		}
		for _, name := range r.names {
			c.got[t][name] = true
		}
		for _, name := range r.removed {
			delete(c.got[t], name)
		}
		c.mu.Unlock()
		prevWant := c.wants(nextType(t))
		names, follow := c.absorb(t, r, now, true)
		if err := send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: url, ResponseNonce: r.nonce}); err != nil {
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

// absorb counts a decoded response's resources and, for clusters and
// listeners, returns the names to ask for next and their type. For
// endpoints it notes the pending change if the response carries it. SotW
// responses of EDS/RDS carry exactly the names asked for, so their names
// are not decoded.
func (c *client) absorb(t int, r *response, now time.Time, delta bool) ([]string, string) {
	c.mu.Lock()
	c.bytes[t] += r.size
	c.responses[t]++
	c.resources[t] += int64(r.resources)
	if c.convergedAt.IsZero() {
		c.initBytes += r.size
	}
	if r.seen != nil && r.seen == c.pending && c.pendingSeen.IsZero() {
		c.pendingSeen = now
	}
	if !delta && (typeOrder[t] == resourcev3.EndpointType || typeOrder[t] == resourcev3.RouteType) {
		c.got[t] = map[string]bool{"": r.resources > 0}
	}
	c.mu.Unlock()

	switch typeOrder[t] {
	case resourcev3.ClusterType:
		names := r.edsNames
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
		names := r.rdsNames
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
			name, b = intern(v), b[m:]
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
