package proxy

import (
	"context"
	"log/slog"
	"net"
	"slices"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/miekg/dns"
	"google.golang.org/protobuf/types/known/anypb"
)

// dnsSnapshot is a sidecar's config in the shape the translator gives it: RDS "15001" with one
// virtual host per service port, EDS clusters outbound|port||host. reviews has no VIP (local
// mode: its endpoints answer); ratings' virtual host lists its VIP as Istio's does.
func dnsSnapshot(t *testing.T, version, listenerAddr string, reviews []string, withRatings bool) *cachev3.Snapshot {
	t.Helper()
	router, _ := anypb.New(&routerv3.Router{})
	ads := &corev3.ConfigSource{ResourceApiVersion: corev3.ApiVersion_V3, ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}
	hcm, _ := anypb.New(&hcmv3.HttpConnectionManager{
		StatPrefix:     "outbound_0.0.0.0_15001",
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{RouteConfigName: "15001", ConfigSource: ads}},
		HttpFilters:    []*hcmv3.HttpFilter{{Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: router}}},
	})
	l := &listenerv3.Listener{Name: "virtualOutbound", Address: sockAddr(listenerAddr),
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{Name: "envoy.filters.network.http_connection_manager",
			ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: hcm}}}}}}
	rc := &routev3.RouteConfiguration{Name: "15001"}
	var clusters, endpoints []types.Resource
	service := func(host, short string, domains []string, addrs []string) {
		name := "outbound|9080||" + host
		clusters = append(clusters, &clusterv3.Cluster{Name: name, ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
			EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{EdsConfig: ads}})
		cla := &endpointv3.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpointv3.LocalityLbEndpoints{{}}}
		for _, a := range addrs {
			cla.Endpoints[0].LbEndpoints = append(cla.Endpoints[0].LbEndpoints, &endpointv3.LbEndpoint{
				HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: sockAddr(net.JoinHostPort(a, "9080"))}}})
		}
		endpoints = append(endpoints, cla)
		rc.VirtualHosts = append(rc.VirtualHosts, &routev3.VirtualHost{
			Name: host + ":9080", Domains: append([]string{host + ":9080", short + ":9080"}, domains...),
			Routes: []*routev3.Route{{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
				Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: name}}}}},
		})
	}
	if reviews != nil {
		service("reviews.default.svc.cluster.local", "reviews", nil, reviews)
	}
	if withRatings {
		service("ratings.other.svc.cluster.local", "ratings.other", []string{"10.96.0.7:9080", "10.96.0.7"}, []string{"127.0.1.9"})
	}
	snap, err := cachev3.NewSnapshot(version, map[resourcev3.Type][]types.Resource{
		resourcev3.ListenerType: {l}, resourcev3.RouteType: {rc}, resourcev3.ClusterType: clusters, resourcev3.EndpointType: endpoints,
	})
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

// startDNSUpstream is a real resolver on 127.0.0.1 that knows example.com (192.0.2.1) and
// answers NXDOMAIN for anything else.
func startDNSUpstream(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		q := r.Question[0]
		switch {
		case q.Name == "example.com." && q.Qtype == dns.TypeA:
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.IPv4(192, 0, 2, 1)})
		case q.Name == "legacy.other.svc.cluster.local." && q.Qtype == dns.TypeA: // a Service outside the mesh config
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.IPv4(10, 96, 9, 9)})
		default:
			m.Rcode = dns.RcodeNameError
		}
		_ = w.WriteMsg(m)
	})}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.ActivateAndServe() }()
	t.Cleanup(func() { _ = srv.ShutdownContext(context.Background()); <-done })
	return pc.LocalAddr().String()
}

// resolve asks the DNS proxy over network and returns the rcode name and the A records.
func resolve(t *testing.T, network, addr, name string) (string, []string) {
	t.Helper()
	c := &dns.Client{Net: network, Timeout: 10 * time.Second}
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeA)
	resp, _, err := c.Exchange(m, addr)
	if err != nil {
		t.Fatalf("%s %s: %v", network, name, err)
	}
	var ips []string
	for _, rr := range resp.Answer {
		if a, ok := rr.(*dns.A); ok {
			ips = append(ips, a.A.String())
		}
	}
	slices.Sort(ips)
	return dns.RcodeToString[resp.Rcode], ips
}

func TestDNSProxyAnswersMeshNamesFromXDSAndForwardsTheRest(t *testing.T) {
	cache, xdsAddr := startControlPlane(t)
	upstream := startDNSUpstream(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	listenerAddr := ln.Addr().String()
	ln.Close()

	ctx, cancel := context.WithCancel(context.Background())
	dnsAddr := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{
			XDSAddress: xdsAddr, NodeID: e2eNode, Metadata: map[string]string{"INTERCEPTION_MODE": "NONE"},
			AdminAddress: "127.0.0.1:0", DrainDuration: time.Second, Logger: slog.New(slog.DiscardHandler),
			DNSAddress: "127.0.0.1:0", DNSUpstreams: []string{upstream},
			OnDNSStarted: func(a string) { dnsAddr <- a },
		})
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	addr := <-dnsAddr

	if err := cache.SetSnapshot(ctx, e2eNode, dnsSnapshot(t, "1", listenerAddr, []string{"127.0.1.5", "127.0.1.6"}, true)); err != nil {
		t.Fatal(err)
	}
	want := []string{"127.0.1.5", "127.0.1.6"}
	// Routes and endpoints arrive separately: wait until the table has both services' answers.
	waitFor(t, func() bool {
		rc, ips := resolve(t, "udp", addr, "reviews.default.svc.cluster.local.")
		rc2, ips2 := resolve(t, "udp", addr, "ratings.other.svc.cluster.local.")
		return rc == "NOERROR" && slices.Equal(ips, want) && rc2 == "NOERROR" && slices.Equal(ips2, []string{"10.96.0.7"})
	})

	for _, network := range []string{"udp", "tcp"} {
		for _, name := range []string{"reviews.default.svc.cluster.local.", "reviews.", "reviews.default.", "reviews.default.svc.", "Reviews.Default.SVC.cluster.local."} {
			if rc, ips := resolve(t, network, addr, name); rc != "NOERROR" || !slices.Equal(ips, want) {
				t.Errorf("%s %s: %s %v, want %v", network, name, rc, ips, want)
			}
		}
		// Another namespace's service: its VIP, by FQDN and namespace form, not by bare name.
		for _, name := range []string{"ratings.other.svc.cluster.local.", "ratings.other."} {
			if rc, ips := resolve(t, network, addr, name); rc != "NOERROR" || !slices.Equal(ips, []string{"10.96.0.7"}) {
				t.Errorf("%s %s: %s %v, want the VIP 10.96.0.7", network, name, rc, ips)
			}
		}
		if rc, _ := resolve(t, network, addr, "ratings."); rc != "NXDOMAIN" {
			t.Errorf("%s ratings.: %s, want NXDOMAIN (from the upstream)", network, rc)
		}
		// A search-path expansion of a mesh name answers as the name itself (with a CNAME, as
		// Istio); one of an unknown qualified name is NXDOMAIN without asking upstream.
		if rc, ips := resolve(t, network, addr, "reviews.default.svc.cluster.local.default.svc.cluster.local."); rc != "NOERROR" || !slices.Equal(ips, want) {
			t.Errorf("%s search expansion of reviews: %s %v", network, rc, ips)
		}
		if rc, _ := resolve(t, network, addr, "nosuch.default.svc.cluster.local.default.svc.cluster.local."); rc != "NXDOMAIN" {
			t.Errorf("%s search expansion of an unknown name: %s, want NXDOMAIN", network, rc)
		}
		if rc, ips := resolve(t, network, addr, "legacy.other.svc.cluster.local."); rc != "NOERROR" || !slices.Equal(ips, []string{"10.96.9.9"}) {
			t.Errorf("%s legacy.other.svc.cluster.local. (not in the config, forwarded): %s %v", network, rc, ips)
		}
		if rc, ips := resolve(t, network, addr, "example.com."); rc != "NOERROR" || !slices.Equal(ips, []string{"192.0.2.1"}) {
			t.Errorf("%s example.com. (forwarded): %s %v", network, rc, ips)
		}
	}

	// A push that moves reviews and drops ratings: answers follow it.
	if err := cache.SetSnapshot(ctx, e2eNode, dnsSnapshot(t, "2", listenerAddr, []string{"127.0.1.7"}, false)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		rc, ips := resolve(t, "udp", addr, "reviews.")
		return rc == "NOERROR" && slices.Equal(ips, []string{"127.0.1.7"})
	})
	waitFor(t, func() bool {
		rc, _ := resolve(t, "udp", addr, "ratings.other.svc.cluster.local.")
		return rc == "NXDOMAIN"
	})

	// reviews removed too: the name is forwarded, and the upstream does not know it.
	if err := cache.SetSnapshot(ctx, e2eNode, dnsSnapshot(t, "3", listenerAddr, nil, false)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		rc, _ := resolve(t, "udp", addr, "reviews.default.svc.cluster.local.")
		return rc == "NXDOMAIN"
	})
}
