package translate

import (
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/trellis-mesh/trellis/internal/model"
)

func meta(kind, ns, name string) model.Meta {
	return model.Meta{Kind: kind, Namespace: ns, Name: name, Source: model.Source{File: "test.yaml", Line: 1}}
}

func httpService(ns, name string, ports ...uint32) *model.ServiceEntry {
	se := &model.ServiceEntry{Meta: meta("ServiceEntry", ns, name), Spec: &networking.ServiceEntry{
		Hosts:            []string{name + "." + ns + ".svc.cluster.local"},
		Resolution:       networking.ServiceEntry_STATIC,
		WorkloadSelector: &networking.WorkloadSelector{Labels: map[string]string{"app": name}},
	}}
	for _, p := range ports {
		se.Spec.Ports = append(se.Spec.Ports, &networking.ServicePort{Number: p, Protocol: "HTTP", Name: "http-" + name})
	}
	return se
}

func workload(ns, name, ip string, labels map[string]string) *model.WorkloadEntry {
	return &model.WorkloadEntry{Meta: meta("WorkloadEntry", ns, name), Spec: &networking.WorkloadEntry{Address: ip, Labels: labels}}
}

func virtualService(ns, name string, hosts []string, http ...*networking.HTTPRoute) *model.VirtualService {
	return &model.VirtualService{Meta: meta("VirtualService", ns, name), Spec: &networking.VirtualService{Hosts: hosts, Http: http}}
}

func dest(host, subset string, weight int32) *networking.HTTPRouteDestination {
	return &networking.HTTPRouteDestination{Destination: &networking.Destination{Host: host, Subset: subset}, Weight: weight}
}

func mustProxy(t *testing.T, id string, mode model.InterceptionMode) *model.Proxy {
	t.Helper()
	p, err := model.ParseProxy(id)
	if err != nil {
		t.Fatal(err)
	}
	p.Interception = mode
	return p
}

const productpageID = "sidecar~127.0.1.2~productpage-v1.default~default.svc.cluster.local"

// buildValid translates cfg for the productpage sidecar and checks the
// result the way the golden tests do.
func buildValid(t *testing.T, cfg *model.Config) *Resources {
	t.Helper()
	res, err := Build(model.NewSnapshot(cfg), mustProxy(t, productpageID, model.InterceptNone))
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	validateAll(t, res)
	return res
}

func vhost(t *testing.T, res *Resources, route, name string) *routev3.VirtualHost {
	t.Helper()
	for _, rc := range res.Routes {
		if rc.GetName() != route {
			continue
		}
		for _, vh := range rc.GetVirtualHosts() {
			if vh.GetName() == name {
				return vh
			}
		}
	}
	t.Fatalf("route %s has no virtual host %s", route, name)
	return nil
}

const reviewsHost = "reviews.default.svc.cluster.local"

func TestDestinationWithoutServiceStillRoutesToItsClusterName(t *testing.T) {
	cfg := &model.Config{
		ServiceEntries: []*model.ServiceEntry{httpService("default", "reviews", 9080)},
		VirtualServices: []*model.VirtualService{virtualService("default", "reviews", []string{"reviews"},
			&networking.HTTPRoute{Route: []*networking.HTTPRouteDestination{dest("nowhere", "", 0)}})},
	}
	res := buildValid(t, cfg)
	got := vhost(t, res, OutboundRouteName, reviewsHost+":9080").GetRoutes()[0].GetRoute().GetCluster()
	if want := "outbound|9080||nowhere.default.svc.cluster.local"; got != want {
		t.Errorf("cluster = %q, want %q", got, want)
	}
}

func TestDestinationPortDefaultsLikeIstio(t *testing.T) {
	single := httpService("default", "single", 8000)
	multi := httpService("default", "multi", 80, 8080)
	e := newEnv(model.NewSnapshot(&model.Config{ServiceEntries: []*model.ServiceEntry{single, multi}}),
		mustProxy(t, productpageID, model.InterceptNone))
	tests := []struct {
		name      string
		d         *networking.Destination
		vhostPort uint32
		want      string
	}{
		{"explicit port wins", &networking.Destination{Host: "multi", Port: &networking.PortSelector{Number: 8080}}, 80,
			"outbound|8080||multi.default.svc.cluster.local"},
		{"vhost port when the service has it", &networking.Destination{Host: "multi"}, 8080,
			"outbound|8080||multi.default.svc.cluster.local"},
		{"the service's only port", &networking.Destination{Host: "single", Subset: "v1"}, 9080,
			"outbound|8000|v1|single.default.svc.cluster.local"},
		{"vhost port as last resort", &networking.Destination{Host: "multi"}, 9090,
			"outbound|9090||multi.default.svc.cluster.local"},
		{"unknown service", &networking.Destination{Host: "ext.example.com"}, 9090,
			"outbound|9090||ext.example.com"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := e.destinationCluster(tc.d, "default", tc.vhostPort)
			if err != nil || got != tc.want {
				t.Errorf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
	if _, err := e.destinationCluster(&networking.Destination{}, "default", 80); err == nil {
		t.Error("empty destination host: no error")
	}
}

func TestSplitDropsZeroWeightsAndALoneSurvivorIsAPlainCluster(t *testing.T) {
	cfg := &model.Config{
		ServiceEntries: []*model.ServiceEntry{httpService("default", "reviews", 9080)},
		VirtualServices: []*model.VirtualService{virtualService("default", "reviews", []string{"reviews"},
			&networking.HTTPRoute{Route: []*networking.HTTPRouteDestination{dest("reviews", "v1", 100), dest("reviews", "v2", 0)}})},
	}
	res := buildValid(t, cfg)
	a := vhost(t, res, OutboundRouteName, reviewsHost+":9080").GetRoutes()[0].GetRoute()
	if a.GetWeightedClusters() != nil || a.GetCluster() != "outbound|9080|v1|"+reviewsHost {
		t.Errorf("action = %v, want plain cluster v1", a)
	}
}

func TestVirtualServiceErrorsNameResourceAndField(t *testing.T) {
	tests := []struct {
		name    string
		http    *networking.HTTPRoute
		wantErr string
	}{
		{"all weights zero", &networking.HTTPRoute{Route: []*networking.HTTPRouteDestination{dest("reviews", "v1", 0), dest("reviews", "v2", 0)}},
			"VirtualService default/reviews (test.yaml:1): http[0].route: every destination has weight 0"},
		{"negative weight", &networking.HTTPRoute{Route: []*networking.HTTPRouteDestination{dest("reviews", "v1", -1), dest("reviews", "v2", 101)}},
			"http[0].route[0].weight"},
		{"pseudo-header set", &networking.HTTPRoute{
			Route:   []*networking.HTTPRouteDestination{dest("reviews", "", 0)},
			Headers: &networking.Headers{Request: &networking.Headers_HeaderOperations{Set: map[string]string{":path": "/x"}}}},
			"http[0].headers.request.set[:path]"},
		{"host removal", &networking.HTTPRoute{
			Route: []*networking.HTTPRouteDestination{{Destination: &networking.Destination{Host: "reviews"},
				Headers: &networking.Headers{Request: &networking.Headers_HeaderOperations{Remove: []string{"Host"}}}}}},
			"http[0].route[0].headers.request.remove[0]"},
		{"empty destination host", &networking.HTTPRoute{Route: []*networking.HTTPRouteDestination{{Destination: &networking.Destination{}}}},
			"http[0].route[0].destination: host"},
		{"bad regex match", &networking.HTTPRoute{
			Match: []*networking.HTTPMatchRequest{{Uri: regex("^/a")}, {Uri: regex("")}},
			Route: []*networking.HTTPRouteDestination{dest("reviews", "", 0)}},
			"http[0].match[1]: uri.regex"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := &model.Config{
				ServiceEntries:  []*model.ServiceEntry{httpService("default", "reviews", 9080)},
				VirtualServices: []*model.VirtualService{virtualService("default", "reviews", []string{"reviews"}, tc.http)},
			}
			_, err := Build(model.NewSnapshot(cfg), mustProxy(t, productpageID, model.InterceptNone))
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.wantErr)
			}
		})
	}
}

func TestRedirectEntryBecomesARedirectAndEndsTheRoutes(t *testing.T) {
	cfg := &model.Config{
		ServiceEntries: []*model.ServiceEntry{httpService("default", "reviews", 9080)},
		VirtualServices: []*model.VirtualService{virtualService("default", "reviews", []string{"reviews"},
			&networking.HTTPRoute{Redirect: &networking.HTTPRedirect{Uri: "/new"}},
			&networking.HTTPRoute{Route: []*networking.HTTPRouteDestination{dest("reviews", "", 0)}})},
	}
	routes := vhost(t, buildValid(t, cfg), OutboundRouteName, reviewsHost+":9080").GetRoutes()
	// The redirect entry matches everything, so Istio drops what follows.
	if len(routes) != 1 || routes[0].GetRedirect().GetPathRedirect() != "/new" ||
		routes[0].GetRedirect().GetResponseCode() != routev3.RedirectAction_MOVED_PERMANENTLY {
		t.Errorf("routes = %v, want one 301 redirect to /new", routes)
	}
}

func TestShortNamesNeverDuplicateADomain(t *testing.T) {
	// A ServiceEntry host spelled "reviews.default" collides with the short
	// name of reviews.default.svc.cluster.local; Envoy rejects duplicates.
	odd := httpService("default", "odd", 9080)
	odd.Spec.Hosts = []string{"reviews.default"}
	cfg := &model.Config{ServiceEntries: []*model.ServiceEntry{httpService("default", "reviews", 9080), odd}}
	res := buildValid(t, cfg)
	checkConsistent(t, res)
	if d := vhost(t, res, OutboundRouteName, "reviews.default:9080").GetDomains(); len(d) != 1 || d[0] != "reviews.default:9080" {
		t.Errorf("reviews.default domains = %v", d)
	}
	d := vhost(t, res, OutboundRouteName, reviewsHost+":9080").GetDomains()
	want := []string{reviewsHost + ":9080", "reviews:9080", "reviews.default.svc:9080"}
	if strings.Join(d, ",") != strings.Join(want, ",") {
		t.Errorf("domains = %v, want %v", d, want)
	}
}

func TestShortNamesOnlyForTheProxysNamespace(t *testing.T) {
	e := newEnv(model.NewSnapshot(&model.Config{}), mustProxy(t, productpageID, model.InterceptNone))
	if got := e.outboundDomains("ratings.other.svc.cluster.local", 9080); len(got) != 1 {
		t.Errorf("domains for another namespace = %v, want only the FQDN", got)
	}
	got := e.outboundDomains("web.default.svc.cluster.local", 80)
	want := "web.default.svc.cluster.local:80,web.default.svc.cluster.local,web:80,web,web.default:80,web.default,web.default.svc:80,web.default.svc"
	if strings.Join(got, ",") != want {
		t.Errorf("port 80 domains = %v", got)
	}
}

func TestEDSClusterWithoutEndpointsGetsEmptyLoadAssignment(t *testing.T) {
	dr := &model.DestinationRule{Meta: meta("DestinationRule", "default", "reviews"), Spec: &networking.DestinationRule{
		Host:    "reviews",
		Subsets: []*networking.Subset{{Name: "v9", Labels: map[string]string{"version": "v9"}}},
	}}
	cfg := &model.Config{
		ServiceEntries:   []*model.ServiceEntry{httpService("default", "reviews", 9080)},
		DestinationRules: []*model.DestinationRule{dr},
		WorkloadEntries:  []*model.WorkloadEntry{workload("default", "reviews-v1", "127.0.1.3", map[string]string{"app": "reviews", "version": "v1"})},
	}
	res := buildValid(t, cfg)
	checkConsistent(t, res)
	for _, cla := range res.Endpoints {
		if cla.GetClusterName() == "outbound|9080|v9|"+reviewsHost && len(cla.GetEndpoints()) != 0 {
			t.Errorf("v9 has endpoints: %v", cla)
		}
	}
	if len(res.Endpoints) != 2 {
		t.Errorf("got %d load assignments, want 2 (default and v9)", len(res.Endpoints))
	}
}

func TestDuplicateSubsetIsAnError(t *testing.T) {
	dr := &model.DestinationRule{Meta: meta("DestinationRule", "default", "reviews"), Spec: &networking.DestinationRule{
		Host: "reviews",
		Subsets: []*networking.Subset{
			{Name: "v1", Labels: map[string]string{"version": "v1"}},
			{Name: "v1", Labels: map[string]string{"version": "v2"}},
		},
	}}
	cfg := &model.Config{ServiceEntries: []*model.ServiceEntry{httpService("default", "reviews", 9080)}, DestinationRules: []*model.DestinationRule{dr}}
	_, err := Build(model.NewSnapshot(cfg), mustProxy(t, productpageID, model.InterceptNone))
	if err == nil || !strings.Contains(err.Error(), "DestinationRule default/reviews (test.yaml:1): subsets[1].name") {
		t.Fatalf("err = %v", err)
	}
}

func TestSidecarIngressErrorsNameTheField(t *testing.T) {
	tests := []struct {
		ingress *networking.IstioIngressListener
		wantErr string
	}{
		{&networking.IstioIngressListener{Port: &networking.SidecarPort{Number: 9080, Protocol: "HTTP"}, DefaultEndpoint: "localhost:x"}, "ingress[0].defaultEndpoint"},
		{&networking.IstioIngressListener{Port: &networking.SidecarPort{Number: 9080, Protocol: "HTTP"}, Bind: "not-an-ip"}, "ingress[0].bind"},
		{&networking.IstioIngressListener{Port: &networking.SidecarPort{Protocol: "HTTP"}}, "ingress[0].port.number"},
	}
	for _, tc := range tests {
		sc := &model.Sidecar{Meta: meta("Sidecar", "default", "pp"), Spec: &networking.Sidecar{Ingress: []*networking.IstioIngressListener{tc.ingress}}}
		_, err := Build(model.NewSnapshot(&model.Config{Sidecars: []*model.Sidecar{sc}}), mustProxy(t, productpageID, model.InterceptNone))
		if err == nil || !strings.Contains(err.Error(), "Sidecar default/pp (test.yaml:1): "+tc.wantErr) {
			t.Errorf("err = %v, want %q", err, tc.wantErr)
		}
	}
}

func TestProxyLabelsOverrideTheWorkloadEntrys(t *testing.T) {
	sidecarFor := func(name, version string, port uint32) *model.Sidecar {
		return &model.Sidecar{Meta: meta("Sidecar", "default", name), Spec: &networking.Sidecar{
			WorkloadSelector: &networking.WorkloadSelector{Labels: map[string]string{"version": version}},
			Ingress:          []*networking.IstioIngressListener{{Port: &networking.SidecarPort{Number: port, Protocol: "HTTP"}}},
		}}
	}
	cfg := &model.Config{
		WorkloadEntries: []*model.WorkloadEntry{workload("default", "productpage-v1", "127.0.1.2", map[string]string{"version": "v1"})},
		Sidecars:        []*model.Sidecar{sidecarFor("a", "v1", 1111), sidecarFor("b", "v2", 2222)},
	}
	p := mustProxy(t, productpageID, model.InterceptNone)
	res, err := Build(model.NewSnapshot(cfg), p)
	if err != nil || res.Listeners[0].GetName() != "127.0.1.2_1111" {
		t.Fatalf("workload labels: %v, %v", res, err)
	}
	p.Labels = map[string]string{"version": "v2"}
	res, err = Build(model.NewSnapshot(cfg), p)
	if err != nil || res.Listeners[0].GetName() != "127.0.1.2_2222" {
		t.Fatalf("proxy labels: %v, %v", res, err)
	}
}

func TestBuildRejectsBadInput(t *testing.T) {
	snap := model.NewSnapshot(&model.Config{})
	if _, err := Build(nil, &model.Proxy{}); err == nil {
		t.Error("nil snapshot: no error")
	}
	if _, err := Build(snap, nil); err == nil {
		t.Error("nil proxy: no error")
	}
	if _, err := Build(snap, &model.Proxy{ID: "x", Type: "waypoint", IP: "127.0.0.1"}); err == nil || !strings.Contains(err.Error(), "waypoint") {
		t.Errorf("unknown node type: %v", err)
	}
}

func TestEndpointAddressForms(t *testing.T) {
	sock := func(ip string, port uint32) *corev3.Address { return socketAddress(ip, port) }
	tests := []struct {
		in   string
		want *corev3.Address
		ok   bool
	}{
		{"127.0.0.1:19083", sock("127.0.0.1", 19083), true},
		{"[::1]:8080", sock("::1", 8080), true},
		{"0.0.0.0:8080", sock("127.0.1.3", 8080), true},
		{"[::]:8080", sock("127.0.1.3", 8080), true},
		{"unix:///var/run/app.sock", pipeAddress("/var/run/app.sock"), true},
		{"unix://", nil, false},
		{"localhost:80", nil, false},
		{"127.0.0.1", nil, false},
		{"127.0.0.1:0", nil, false},
		{"127.0.0.1:70000", nil, false},
	}
	for _, tc := range tests {
		got, err := endpointAddress(tc.in, "127.0.1.3")
		if (err == nil) != tc.ok || (tc.ok && !proto.Equal(got, tc.want)) {
			t.Errorf("endpointAddress(%q) = %v, %v; want %v (ok=%v)", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestParseLocality(t *testing.T) {
	tests := []struct {
		in   string
		want *corev3.Locality
	}{
		{"", nil},
		{"us-east", &corev3.Locality{Region: "us-east"}},
		{"us-east/zone-a", &corev3.Locality{Region: "us-east", Zone: "zone-a"}},
		{"us-east/zone-a/rack-1", &corev3.Locality{Region: "us-east", Zone: "zone-a", SubZone: "rack-1"}},
	}
	for _, tc := range tests {
		if got := parseLocality(tc.in); !proto.Equal(got, tc.want) {
			t.Errorf("parseLocality(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestLogicalDNSSubsetWithoutEndpointsStaysValid(t *testing.T) {
	se := &model.ServiceEntry{Meta: meta("ServiceEntry", "default", "legacy"), Spec: &networking.ServiceEntry{
		Hosts:      []string{"legacy.example.com"},
		Resolution: networking.ServiceEntry_DNS_ROUND_ROBIN,
		Ports:      []*networking.ServicePort{{Number: 80, Protocol: "HTTP", Name: "http"}},
		Endpoints: []*networking.WorkloadEntry{
			{Address: "a.legacy.example.com", Labels: map[string]string{"v": "1"}},
			{Address: "b.legacy.example.com", Labels: map[string]string{"v": "1"}},
		},
	}}
	dr := &model.DestinationRule{Meta: meta("DestinationRule", "default", "legacy"), Spec: &networking.DestinationRule{
		Host:    "legacy.example.com",
		Subsets: []*networking.Subset{{Name: "v2", Labels: map[string]string{"v": "2"}}},
	}}
	res := buildValid(t, &model.Config{ServiceEntries: []*model.ServiceEntry{se}, DestinationRules: []*model.DestinationRule{dr}})
	checkConsistent(t, res)
	for _, c := range res.Clusters {
		hosts := 0
		for _, g := range c.GetLoadAssignment().GetEndpoints() {
			hosts += len(g.GetLbEndpoints())
		}
		switch c.GetName() {
		case "outbound|80||legacy.example.com":
			if c.GetType().String() != "LOGICAL_DNS" || hosts != 1 {
				t.Errorf("%s: type %v with %d hosts, want LOGICAL_DNS with 1", c.GetName(), c.GetType(), hosts)
			}
		case "outbound|80|v2|legacy.example.com":
			if c.GetType().String() != "STRICT_DNS" || hosts != 0 {
				t.Errorf("%s: type %v with %d hosts, want empty STRICT_DNS", c.GetName(), c.GetType(), hosts)
			}
		}
	}
}

func TestTCPOnlyVirtualServiceLeavesHTTPRoutingAlone(t *testing.T) {
	vs := virtualService("default", "reviews-tcp", []string{"reviews"})
	vs.Spec.Tcp = []*networking.TCPRoute{{Route: []*networking.RouteDestination{{Destination: &networking.Destination{Host: "reviews", Subset: "v1"}}}}}
	cfg := &model.Config{ServiceEntries: []*model.ServiceEntry{httpService("default", "reviews", 9080)}, VirtualServices: []*model.VirtualService{vs}}
	r := vhost(t, buildValid(t, cfg), OutboundRouteName, reviewsHost+":9080").GetRoutes()
	if len(r) != 1 || r[0].GetRoute().GetCluster() != "outbound|9080||"+reviewsHost {
		t.Errorf("routes = %v, want the default route", r)
	}
}

func TestGatewayWithoutVirtualServicesServesAnEmptyRouteConfig(t *testing.T) {
	gw := &model.Gateway{Meta: meta("Gateway", "istio-system", "public"), Spec: &networking.Gateway{
		Selector: map[string]string{"istio": "ingressgateway"},
		Servers:  []*networking.Server{{Port: &networking.Port{Number: 8080, Protocol: "HTTP", Name: "http"}, Hosts: []string{"*"}}},
	}}
	cfg := &model.Config{
		Gateways:        []*model.Gateway{gw},
		WorkloadEntries: []*model.WorkloadEntry{workload("istio-system", "ingress", "127.0.1.1", map[string]string{"istio": "ingressgateway"})},
	}
	p := mustProxy(t, "router~127.0.1.1~ingress.istio-system~istio-system.svc.cluster.local", model.InterceptNone)
	res, err := Build(model.NewSnapshot(cfg), p)
	if err != nil {
		t.Fatal(err)
	}
	validateAll(t, res)
	checkConsistent(t, res)
	if len(res.Listeners) != 1 || res.Listeners[0].GetName() != "127.0.1.1_8080" || len(res.Routes) != 1 || res.Routes[0].GetName() != "http.8080" {
		t.Fatalf("listeners %v routes %v", res.Listeners, res.Routes)
	}
	if n := len(res.Routes[0].GetVirtualHosts()); n != 0 {
		t.Errorf("%d virtual hosts, want none", n)
	}
}
