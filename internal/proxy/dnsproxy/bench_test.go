package dnsproxy

import (
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"github.com/miekg/dns"
	"google.golang.org/protobuf/types/known/anypb"
)

func benchTable(b *testing.B) *Table {
	tcp, _ := anypb.New(&tcpv3.TcpProxy{StatPrefix: "x", ClusterSpecifier: &tcpv3.TcpProxy_Cluster{Cluster: "outbound|9080||reviews.default.svc.cluster.local"}})
	return Build(Resources{Listeners: []*listenerv3.Listener{{Name: "10.96.0.9_9080",
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{Name: "tcp", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: tcp}}}}}}}}, "default", "")
}

// BenchmarkLookup: a table lookup allocates nothing for a lower-case name.
func BenchmarkLookup(b *testing.B) {
	t := benchTable(b)
	b.ReportAllocs()
	for b.Loop() {
		if h, _, _ := t.Lookup("reviews.default.svc.cluster.local."); h == nil {
			b.Fatal("not found")
		}
	}
}

// BenchmarkServeMeshName: one mesh query answered in process (the reply's records allocate).
func BenchmarkServeMeshName(b *testing.B) {
	s, err := New(Config{Upstreams: []string{"127.0.0.1:1"}})
	if err != nil {
		b.Fatal(err)
	}
	s.SetTable(benchTable(b))
	r := new(dns.Msg)
	r.SetQuestion("reviews.", dns.TypeA)
	w := &recorder{}
	b.ReportAllocs()
	for b.Loop() {
		s.ServeDNS(w, r)
	}
}
