package main

import (
	"bytes"
	"context"
	"net"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/emptypb"
)

func mustAny(t *testing.T, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func httpListener(t *testing.T, name string, routes ...string) *listenerv3.Listener {
	l := &listenerv3.Listener{Name: name}
	for _, r := range routes {
		h := &hcmv3.HttpConnectionManager{StatPrefix: name, RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{
			Rds: &hcmv3.Rds{RouteConfigName: r, ConfigSource: &corev3.ConfigSource{}}}}
		l.FilterChains = append(l.FilterChains, &listenerv3.FilterChain{Filters: []*listenerv3.Filter{{
			Name: "envoy.filters.network.http_connection_manager", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(t, h)}}}})
	}
	return l
}

func cla(cluster, addr string) *endpointv3.ClusterLoadAssignment {
	return &endpointv3.ClusterLoadAssignment{ClusterName: cluster, Endpoints: []*endpointv3.LocalityLbEndpoints{{
		LbEndpoints: []*endpointv3.LbEndpoint{{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
			Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
				Address: addr, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 9080}}}}}}}}}}}
}

// fixtures are, per type, resources as the control plane sends them.
func fixtures(t *testing.T) map[string][]proto.Message {
	return map[string][]proto.Message{
		resourcev3.ClusterType: {
			&clusterv3.Cluster{Name: "outbound|9080||reviews.ns-1.svc.cluster.local", ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
				EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{EdsConfig: &corev3.ConfigSource{}}, ConnectTimeout: durationpb.New(1e9)},
			&clusterv3.Cluster{Name: "static", ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
				LoadAssignment: cla("static", "127.0.0.1")},
			&clusterv3.Cluster{Name: "outbound|80||details.ns-0.svc.cluster.local", ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS}},
			&clusterv3.Cluster{Name: "PassthroughCluster", ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST}},
		},
		resourcev3.ListenerType: {
			httpListener(t, "0.0.0.0_9080", "9080"),
			httpListener(t, "0.0.0.0_80", "80", "9080"),
			&listenerv3.Listener{Name: "10.0.0.1_3306", FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{
				Name: "envoy.filters.network.tcp_proxy", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(t, &tcpv3.TcpProxy{StatPrefix: "db"})}}}}}},
		},
		resourcev3.EndpointType: {
			cla("outbound|80||details.ns-0.svc.cluster.local", "10.250.0.1"), // the address, another cluster
			cla("outbound|9080||reviews.ns-1.svc.cluster.local", "10.1.0.7"),
			cla("outbound|9080||reviews.ns-1.svc.cluster.local", "10.250.0.1"),
		},
		resourcev3.RouteType: {
			&routev3.RouteConfiguration{Name: "9080", VirtualHosts: []*routev3.VirtualHost{{Name: "reviews", Domains: []string{"*"}}}},
		},
	}
}

// byProto is what the load took from a response before it had its own
// decoder: a proto.Unmarshal, then the same reading of each Any.
func byProto(b []byte, delta bool, ch *change) (response, error) {
	r := response{delta: delta}
	var anys []*anypb.Any
	if delta {
		var m discoveryv3.DeltaDiscoveryResponse
		if err := proto.Unmarshal(b, &m); err != nil {
			return r, err
		}
		r.typeURL, r.version, r.nonce, r.removed = m.GetTypeUrl(), m.GetSystemVersionInfo(), m.GetNonce(), m.GetRemovedResources()
		for _, res := range m.GetResources() {
			anys = append(anys, res.GetResource())
			r.names = append(r.names, res.GetName())
		}
	} else {
		var m discoveryv3.DiscoveryResponse
		if err := proto.Unmarshal(b, &m); err != nil {
			return r, err
		}
		r.typeURL, r.version, r.nonce, anys = m.GetTypeUrl(), m.GetVersionInfo(), m.GetNonce(), m.GetResources()
	}
	r.resources = len(anys)
	for _, a := range anys {
		r.size += int64(len(a.GetValue()))
		switch r.typeURL {
		case resourcev3.ClusterType:
			if name, eds := edsCluster(a.GetValue()); eds {
				r.edsNames = append(r.edsNames, name)
			}
		case resourcev3.ListenerType:
			var l listenerv3.Listener
			if a.UnmarshalTo(&l) != nil {
				continue
			}
			for _, fc := range l.GetFilterChains() {
				for _, f := range fc.GetFilters() {
					var h hcmv3.HttpConnectionManager
					if f.GetTypedConfig().MessageIs(&h) && f.GetTypedConfig().UnmarshalTo(&h) == nil {
						if n := h.GetRds().GetRouteConfigName(); n != "" && !slices.Contains(r.rdsNames, n) {
							r.rdsNames = append(r.rdsNames, n)
						}
					}
				}
			}
		case resourcev3.EndpointType:
			if ch != nil && r.seen == nil && bytes.Contains(a.GetValue(), ch.addr) && bytes.Contains(a.GetValue(), []byte(ch.cluster)) {
				r.seen = ch
			}
		}
	}
	return r, nil
}

func decodeWithCodec(b []byte, delta bool, ch *change) (response, error) {
	r := response{delta: delta, pending: func() *change { return ch }}
	err := newLoadCodec().Unmarshal(mem.BufferSlice{mem.SliceBuffer(b)}, &r)
	r.pending = nil
	return r, err
}

func encodedResponses(t *testing.T) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for url, msgs := range fixtures(t) {
		sotw := &discoveryv3.DiscoveryResponse{VersionInfo: "v7", TypeUrl: url, Nonce: "n-" + shortName(url)}
		delta := &discoveryv3.DeltaDiscoveryResponse{SystemVersionInfo: "s7", TypeUrl: url, Nonce: "d-" + shortName(url),
			RemovedResources: []string{"gone-a", "gone-b"}}
		for i, m := range msgs {
			a := mustAny(t, m)
			sotw.Resources = append(sotw.Resources, a)
			delta.Resources = append(delta.Resources, &discoveryv3.Resource{Name: "r" + string(rune('a'+i)), Version: "1", Resource: a})
		}
		// A delta resource may come without a body; it still counts.
		delta.Resources = append(delta.Resources, &discoveryv3.Resource{Name: "empty"})
		for name, m := range map[string]proto.Message{"sotw " + shortName(url): sotw, "delta " + shortName(url): delta} {
			b, err := proto.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			out[name] = b
		}
	}
	return out
}

// The decoder's summary of a response must be what the proto path made of
// it: counts, sizes, versions, nonces, names asked for next, removals and
// whether the pending endpoint change is in it.
func TestDecoderSummaryMatchesProtoDecode(t *testing.T) {
	ch := &change{id: "c0", cluster: "outbound|9080||reviews.ns-1.svc.cluster.local", addr: []byte("10.250.0.1")}
	for name, b := range encodedResponses(t) {
		delta := name[:5] == "delta"
		for _, pending := range []*change{nil, ch} {
			want, err := byProto(b, delta, pending)
			if err != nil {
				t.Fatalf("%s: proto: %v", name, err)
			}
			got, err := decodeWithCodec(b, delta, pending)
			if err != nil {
				t.Fatalf("%s: decoder: %v", name, err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("%s (pending %v):\n got %+v\nwant %+v", name, pending != nil, got, want)
			}
		}
	}
	// The fixtures exercise each rule: spot-check what they must yield.
	got, _ := decodeWithCodec(encodedResponses(t)["sotw Cluster"], false, nil)
	if want := []string{"outbound|9080||reviews.ns-1.svc.cluster.local", "outbound|80||details.ns-0.svc.cluster.local"}; !slices.Equal(got.edsNames, want) {
		t.Errorf("EDS clusters = %q, want %q", got.edsNames, want)
	}
	got, _ = decodeWithCodec(encodedResponses(t)["delta Listener"], true, nil)
	if want := []string{"9080", "80"}; !slices.Equal(got.rdsNames, want) || !slices.Equal(got.removed, []string{"gone-a", "gone-b"}) || len(got.names) != 4 {
		t.Errorf("delta listeners: routes %q removed %q names %q", got.rdsNames, got.removed, got.names)
	}
	got, _ = decodeWithCodec(encodedResponses(t)["sotw ClusterLoadAssignment"], false, ch)
	if got.seen != ch {
		t.Errorf("the CLA with the change's cluster and address was not seen")
	}
	other := &change{cluster: "outbound|80||details.ns-0.svc.cluster.local", addr: []byte("10.9.9.9")}
	if got, _ = decodeWithCodec(encodedResponses(t)["sotw ClusterLoadAssignment"], false, other); got.seen != nil {
		t.Errorf("a change whose address is in no CLA of its cluster was seen")
	}
}

// A cut-off response is an error wherever proto.Unmarshal says so, and
// never a panic; where a cut falls between fields both read the same.
func TestDecoderRejectsTruncatedResponses(t *testing.T) {
	ch := &change{cluster: "outbound|9080||reviews.ns-1.svc.cluster.local", addr: []byte("10.250.0.1")}
	for name, b := range encodedResponses(t) {
		delta := name[:5] == "delta"
		if _, err := decodeWithCodec(b[:len(b)-1], delta, ch); err == nil {
			t.Errorf("%s cut by one byte: no error", name)
		}
		for n := range len(b) {
			want, perr := byProto(b[:n], delta, ch)
			got, err := decodeWithCodec(b[:n], delta, ch)
			if (err != nil) != (perr != nil) {
				t.Fatalf("%s cut at %d/%d: decoder error %v, proto error %v", name, n, len(b), err, perr)
			}
			if err == nil && !reflect.DeepEqual(got, want) {
				t.Fatalf("%s cut at %d/%d:\n got %+v\nwant %+v", name, n, len(b), got, want)
			}
		}
	}
}

// Requests, and any message that is not the load's own response, go
// through gRPC's proto codec both ways.
func TestCodecFallsBackToProtoForOtherMessages(t *testing.T) {
	c := newLoadCodec()
	req := &discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.ClusterType, ResponseNonce: "n1", ResourceNames: []string{"a"}}
	data, err := c.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	var back discoveryv3.DiscoveryRequest
	if err := c.Unmarshal(data, &back); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(req, &back) {
		t.Errorf("round trip: got %v, want %v", &back, req)
	}
}

// rawBytes is sent as is by rawServerCodec: a response the test forges.
type rawBytes []byte

type rawServerCodec struct{ loadCodec }

func (c rawServerCodec) Marshal(v any) (mem.BufferSlice, error) {
	if b, ok := v.(rawBytes); ok {
		return mem.BufferSlice{mem.SliceBuffer(b)}, nil
	}
	return c.loadCodec.Marshal(v)
}

// adsForger answers a stream's first request with its body.
type adsForger struct {
	discoveryv3.UnimplementedAggregatedDiscoveryServiceServer
	body []byte
}

func (f adsForger) StreamAggregatedResources(st discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesServer) error {
	return f.answer(st)
}

func (f adsForger) DeltaAggregatedResources(st discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) error {
	return f.answer(st)
}

func (f adsForger) answer(st grpc.ServerStream) error {
	if err := st.RecvMsg(new(emptypb.Empty)); err != nil {
		return err
	}
	if err := st.SendMsg(rawBytes(f.body)); err != nil {
		return err
	}
	<-st.Context().Done()
	return nil
}

// A client sent a cut-off response over real gRPC stops with an error,
// which the summary reports, rather than panicking or counting it.
func TestClientFailsOnAMalformedResponse(t *testing.T) {
	for name, b := range encodedResponses(t) {
		if !strings.HasSuffix(name, " Cluster") {
			continue
		}
		delta := strings.HasPrefix(name, "delta")
		t.Run(name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			srv := grpc.NewServer(grpc.ForceServerCodecV2(rawServerCodec{newLoadCodec()}))
			discoveryv3.RegisterAggregatedDiscoveryServiceServer(srv, adsForger{body: b[:len(b)/2]})
			go func() { _ = srv.Serve(ln) }()
			t.Cleanup(srv.Stop)
			conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { conn.Close() })
			ctx, cancel := context.WithCancel(context.Background())
			t.Cleanup(cancel)
			c := &client{id: "sidecar~10.0.0.1~load-0.ns-0~ns-0.svc.cluster.local", delta: delta, start: time.Now(), onConverged: func() {}}
			done := make(chan struct{})
			go func() { c.run(ctx, conn); close(done) }()
			select {
			case <-done:
			case <-time.After(20 * time.Second):
				t.Fatal("the client did not stop on a malformed response")
			}
			c.mu.Lock()
			defer c.mu.Unlock()
			if c.err == nil || !strings.Contains(c.err.Error(), "decoding response") {
				t.Errorf("client error = %v, want a decoding error", c.err)
			}
			if c.responses != [4]int64{} {
				t.Errorf("responses counted from a malformed one: %v", c.responses)
			}
		})
	}
}
