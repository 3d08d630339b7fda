package server

import (
	"context"
	"errors"
	"io"
	"math"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/trellis-mesh/trellis/internal/proxy/upstream"
)

// dynamicProxy is a proxy configured over "xDS": listener "l" (RDS "r") and EDS clusters a, b, c,
// each with one backend of the same name.
type dynamicProxy struct {
	p        *Proxy
	sub      *fakeSubscriber
	base     string
	backends map[string]*backend
}

func newDynamicProxy(t *testing.T, routes *routev3.RouteConfiguration) *dynamicProxy {
	t.Helper()
	d := &dynamicProxy{sub: &fakeSubscriber{}, backends: map[string]*backend{}}
	d.p = newProxy(t, Options{WaitForLDS: true, WaitForCDS: true})
	d.p.SetSubscriber(d.sub)
	if err := d.p.ApplyBootstrap(&bootstrapv3.Bootstrap{}); err != nil {
		t.Fatal(err)
	}
	var clas []proto.Message
	for _, name := range []string{"a", "b", "c"} {
		d.backends[name] = newBackend(t, name, nil)
		clas = append(clas, cla(name, d.backends[name].addr))
	}
	mustApply(t, d.p, ClusterType, msgs(edsCluster("a"), edsCluster("b"), edsCluster("c")))
	if got := d.sub.get(EndpointType); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Fatalf("EDS subscription %v", got)
	}
	mustApply(t, d.p, EndpointType, clas)
	if _, ok := d.p.Ready(); ok {
		t.Fatal("ready before LDS")
	}
	mustApply(t, d.p, ListenerType, msgs(hcmListener(t, "l", "127.0.0.1:0", "r", nil)))
	if got := d.sub.get(RouteType); !slices.Equal(got, []string{"r"}) {
		t.Fatalf("RDS subscription %v", got)
	}
	if state, ok := d.p.Ready(); !ok {
		t.Fatalf("not ready after LDS and CDS: %s", state)
	}
	mustApply(t, d.p, RouteType, msgs(routes))
	d.base = "http://" + listenerAddr(t, d.p, "l")
	return d
}

func TestWeightedClustersSplit90To10(t *testing.T) {
	d := newDynamicProxy(t, routeConfig("r", []string{"*"}, routeTo("/", weighted(map[string]uint32{"a": 90, "b": 10}))))
	c := keepAliveClient(t)
	counts := map[string]int{}
	const n = 2000
	for range n {
		code, body, _ := do(t, c, "GET", d.base+"/", "", nil)
		if code != 200 {
			t.Fatalf("status %d", code)
		}
		counts[body]++
	}
	if share := float64(counts["b"]) / n; math.Abs(share-0.10) > 0.03 {
		t.Fatalf("b got %.3f of %d requests (%v), want 0.10±0.03", share, n, counts)
	}
}

func TestRoundRobinAcrossThreeEndpoints(t *testing.T) {
	d := newDynamicProxy(t, routeConfig("r", []string{"*"}, routeTo("/", toCluster("a"))))
	mustApply(t, d.p, EndpointType, msgs(
		cla("a", d.backends["a"].addr, d.backends["b"].addr, d.backends["c"].addr), cla("b", d.backends["b"].addr), cla("c", d.backends["c"].addr)))
	c := keepAliveClient(t)
	counts := map[string]int{}
	for range 300 {
		_, body, _ := do(t, c, "GET", d.base+"/", "", nil)
		counts[body]++
	}
	if counts["a"] != 100 || counts["b"] != 100 || counts["c"] != 100 {
		t.Fatalf("got %v, want 100 each", counts)
	}
}

func TestInvalidResourceIsRejectedAndOldConfigKeepsServing(t *testing.T) {
	d := newDynamicProxy(t, routeConfig("r", []string{"*"}, routeTo("/", toCluster("a"))))
	bad := routeConfig("r", []string{"*"}, &routev3.Route{
		Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
		Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: 200,
			Body: &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: "/etc/motd"}}}},
	})
	err := d.p.OnResources(RouteType, msgs(bad))
	if err == nil || !strings.Contains(err.Error(), `RouteConfiguration "r": virtual_hosts[0] ("vh").routes[0].direct_response.body: *corev3.DataSource_Filename: only inline_string and inline_bytes are not supported`) {
		t.Fatalf("got %v", err)
	}
	if code, body, _ := do(t, keepAliveClient(t), "GET", d.base+"/", "", nil); code != 200 || body != "a" {
		t.Fatalf("after rejected RDS: %d %q", code, body)
	}
	tls := edsCluster("a")
	tls.TransportSocket = &corev3.TransportSocket{Name: "envoy.transport_sockets.tls"}
	if err := d.p.OnResources(ClusterType, msgs(tls, edsCluster("b"))); err == nil {
		t.Fatal("cluster with a TLS socket without its context accepted")
	}
	if code, body, _ := do(t, keepAliveClient(t), "GET", d.base+"/", "", nil); code != 200 || body != "a" {
		t.Fatalf("after rejected CDS: %d %q", code, body)
	}
	if got := d.p.Stats().Counter("cluster_manager.cds.update_rejected").Value(); got != 1 {
		t.Fatalf("cds update_rejected = %d", got)
	}
	dump, err := d.p.ConfigDump()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(dump.String(), "transport_socket.typed_config: the TLS transport socket needs its TLS context") {
		t.Fatal("config dump has no error_state for the rejected cluster")
	}
}

func TestDanglingClusterReferenceIs503UntilTheClusterArrives(t *testing.T) {
	d := newDynamicProxy(t, routeConfig("r", []string{"*"}, routeTo("/", toCluster("later"))))
	c := keepAliveClient(t)
	if code, _, _ := do(t, c, "GET", d.base+"/", "", nil); code != 503 {
		t.Fatalf("got %d", code)
	}
	mustApply(t, d.p, ClusterType, msgs(edsCluster("a"), edsCluster("b"), edsCluster("c"), staticCluster("later", d.backends["c"].addr)))
	if code, body, _ := do(t, c, "GET", d.base+"/", "", nil); code != 200 || body != "c" {
		t.Fatalf("got %d %q", code, body)
	}
}

func TestUnchangedClusterKeepsPoolAndBalancerAcrossPushes(t *testing.T) {
	d := newDynamicProxy(t, routeConfig("r", []string{"*"}, routeTo("/", toCluster("a"))))
	c := keepAliveClient(t)
	do(t, c, "GET", d.base+"/", "", nil)
	before := clusterByName(d.p, "a")
	changedB := edsCluster("b")
	changedB.ConnectTimeout = durationpb.New(2 * time.Second)
	mustApply(t, d.p, ClusterType, msgs(edsCluster("a"), changedB, edsCluster("c"), edsCluster("d")))
	if clusterByName(d.p, "a") != before {
		t.Fatal("unchanged cluster a was rebuilt")
	}
	if clusterByName(d.p, "b") == nil || clusterByName(d.p, "d") == nil {
		t.Fatal("changed/added clusters missing")
	}
	if got := d.sub.get(EndpointType); !slices.Equal(got, []string{"a", "b", "c", "d"}) {
		t.Fatalf("EDS subscription %v", got)
	}
	do(t, c, "GET", d.base+"/", "", nil)
	if n := d.backends["a"].conns.Load(); n != 1 {
		t.Fatalf("backend a saw %d connections; the pool was not kept", n)
	}
	// The changed cluster b got its endpoints from the EDS cache.
	if hosts := clusterByName(d.p, "b").Hosts(); len(hosts) != 1 {
		t.Fatalf("rebuilt cluster b has %d hosts", len(hosts))
	}
}

func clusterByName(p *Proxy, name string) *upstream.Cluster {
	for _, c := range p.Clusters() {
		if c.Name() == name {
			return c
		}
	}
	return nil
}

// TestRouteAndClusterSwapsUnderLoadFailNoRequest pushes 20 route and cluster updates while 8 clients
// send requests: every request must succeed, each served by the config it started with.
func TestRouteAndClusterSwapsUnderLoadFailNoRequest(t *testing.T) {
	toA := routeConfig("r", []string{"*"}, routeTo("/", toCluster("a")))
	toB := routeConfig("r", []string{"*"}, routeTo("/", weighted(map[string]uint32{"b": 1, "c": 1})))
	d := newDynamicProxy(t, toA)
	var stop atomic.Bool
	var total, failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			c := keepAliveClient(t)
			for !stop.Load() {
				resp, err := c.Get(d.base + "/")
				total.Add(1)
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, resp.Status)
				}
			}
		})
	}
	for i := range 20 {
		time.Sleep(10 * time.Millisecond)
		rc := toA
		if i%2 == 0 {
			rc = toB
		}
		mustApply(t, d.p, RouteType, msgs(rc))
		b := edsCluster("b")
		b.ConnectTimeout = durationpb.New(time.Duration(i+1) * time.Second) // rebuilds cluster b
		mustApply(t, d.p, ClusterType, msgs(edsCluster("a"), b, edsCluster("c")))
	}
	time.Sleep(10 * time.Millisecond)
	stop.Store(true)
	wg.Wait()
	if failed.Load() != 0 || total.Load() < 100 {
		t.Fatalf("%d of %d requests failed (first: %v)", failed.Load(), total.Load(), firstErr.Load())
	}
}

func TestRemovedListenerDrainsInFlightRequests(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	slow := newBackend(t, "slow", func(w http.ResponseWriter, _ *http.Request) {
		once.Do(func() { close(entered) })
		<-release
		_, _ = io.WriteString(w, "done")
	})
	d := newDynamicProxy(t, routeConfig("r", []string{"*"}, routeTo("/", toCluster("slow"))))
	mustApply(t, d.p, ClusterType, msgs(edsCluster("a"), edsCluster("b"), edsCluster("c"), staticCluster("slow", slow.addr)))
	addr := strings.TrimPrefix(d.base, "http://")
	result := make(chan string, 1)
	go func() {
		resp, err := http.Get(d.base + "/")
		if err != nil {
			result <- err.Error()
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		result <- resp.Status + " " + string(b)
	}()
	<-entered
	mustApply(t, d.p, ListenerType, nil)
	if _, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		t.Fatal("removed listener still accepts")
	}
	if got := d.sub.get(RouteType); len(got) != 0 {
		t.Fatalf("RDS still subscribed: %v", got)
	}
	close(release)
	if got := <-result; got != "200 OK done" {
		t.Fatalf("in-flight request: %s", got)
	}
}

func TestStaticNamesCannotBeReplacedOverXDS(t *testing.T) {
	p := newProxy(t, Options{})
	b := parseBootstrap(t, `
static_resources:
  clusters:
  - {name: s, type: STATIC, load_assignment: {cluster_name: s}}
`)
	if err := p.ApplyBootstrap(b); err != nil {
		t.Fatal(err)
	}
	if err := p.OnResources(ClusterType, msgs(edsCluster("s"))); err == nil {
		t.Fatal("CDS replaced a static cluster")
	}
}

func TestShutdownReportsDrainingAndStopsListeners(t *testing.T) {
	d := newDynamicProxy(t, routeConfig("r", []string{"*"}, routeTo("/", toCluster("a"))))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := d.p.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if state, ok := d.p.Ready(); ok || state != "DRAINING" {
		t.Fatalf("state %s", state)
	}
	_, err := http.Get(d.base + "/")
	var opErr *net.OpError
	if !errors.As(err, &opErr) {
		t.Fatalf("listener still serving after shutdown: %v", err)
	}
}

func TestUnknownTypeIsRejected(t *testing.T) {
	p := newProxy(t, Options{})
	if err := p.OnResources("type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret", nil); err == nil {
		t.Fatal("accepted")
	}
}
