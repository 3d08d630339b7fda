package translate

import (
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/trellis-mesh/trellis/internal/model"
)

func TestRetryPolicyFollowsIstioConvertPolicy(t *testing.T) {
	def := retryPolicy(nil, false)
	if def.GetNumRetries().GetValue() != 2 || def.GetRetryOn() != defaultRetryOn ||
		def.GetHostSelectionRetryMaxAttempts() != 5 || len(def.GetRetryHostPredicate()) != 1 ||
		len(def.GetRetriableStatusCodes()) != 1 || def.GetRetriableStatusCodes()[0] != 503 {
		t.Errorf("default policy = %v, want Istio's", def)
	}
	if p := retryPolicy(nil, true); len(p.GetRetryHostPredicate()) != 0 {
		t.Errorf("consistent-hash default = %v, want no previous_hosts predicate", p)
	}
	if p := retryPolicy(&networking.HTTPRetry{Attempts: 0}, false); p != nil {
		t.Errorf("attempts 0 = %v, want no retry policy", p)
	}
	got := retryPolicy(&networking.HTTPRetry{
		Attempts:                 3,
		PerTryTimeout:            durationpb.New(2e9),
		RetryOn:                  "gateway-error, 503,connect-failure,425,http3-post-connect-failure",
		RetryIgnorePreviousHosts: wrapperspb.Bool(false),
	}, false)
	want := &routev3.RetryPolicy{
		NumRetries:                    wrapperspb.UInt32(3),
		RetryOn:                       "gateway-error,connect-failure,retriable-status-codes",
		RetriableStatusCodes:          []uint32{503, 425},
		PerTryTimeout:                 durationpb.New(2e9),
		HostSelectionRetryMaxAttempts: 5,
	}
	if !proto.Equal(got, want) {
		t.Errorf("policy =\n %v\nwant\n %v", got, want)
	}
}

func TestRedirectPortFollowsIstio(t *testing.T) {
	tests := []struct {
		name string
		in   *networking.HTTPRedirect
		want uint32
	}{
		{"from request port", &networking.HTTPRedirect{Uri: "/x", RedirectPort: &networking.HTTPRedirect_DerivePort{DerivePort: networking.HTTPRedirect_FROM_REQUEST_PORT}}, 9080},
		{"protocol default", &networking.HTTPRedirect{Uri: "/x", RedirectPort: &networking.HTTPRedirect_DerivePort{DerivePort: networking.HTTPRedirect_FROM_PROTOCOL_DEFAULT}}, 0},
		{"explicit 80 over http is left out", &networking.HTTPRedirect{Uri: "/x", RedirectPort: &networking.HTTPRedirect_Port{Port: 80}}, 0},
		{"explicit 443 over https is left out", &networking.HTTPRedirect{Scheme: "https", RedirectPort: &networking.HTTPRedirect_Port{Port: 443}}, 0},
		{"explicit 8443 over https stays", &networking.HTTPRedirect{Scheme: "https", RedirectPort: &networking.HTTPRedirect_Port{Port: 8443}}, 8443},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rd, err := redirectAction(tt.in, 9080)
			if err != nil {
				t.Fatal(err)
			}
			if rd.GetPortRedirect() != tt.want {
				t.Errorf("port_redirect = %d, want %d", rd.GetPortRedirect(), tt.want)
			}
		})
	}
	if _, err := redirectAction(&networking.HTTPRedirect{Uri: "/x", RedirectCode: 305}, 80); err == nil {
		t.Error("redirect code 305 translated; Envoy cannot send it")
	}
}

func TestMirrorPercentZeroMeansNoMirror(t *testing.T) {
	if f := mirrorFraction(&networking.Percent{Value: 0}, nil); f != nil {
		t.Errorf("0%% = %v, want no mirror", f)
	}
	if f := mirrorFraction(nil, wrapperspb.UInt32(0)); f != nil {
		t.Errorf("mirrorPercent 0 = %v, want no mirror", f)
	}
	if f := mirrorFraction(nil, nil).GetDefaultValue(); f.GetNumerator() != 100 || f.GetDenominator() != 0 {
		t.Errorf("unset = %v, want 100/HUNDRED", f)
	}
	if f := mirrorFraction(&networking.Percent{Value: 0.5}, nil).GetDefaultValue(); f.GetNumerator() != 5000 {
		t.Errorf("0.5%% = %v, want 5000 per million", f)
	}
}

func TestConsistentHashReachesTheDefaultRoute(t *testing.T) {
	cfg := &model.Config{
		ServiceEntries: []*model.ServiceEntry{httpService("default", "reviews", 9080)},
		DestinationRules: []*model.DestinationRule{{Meta: meta("DestinationRule", "default", "reviews"), Spec: &networking.DestinationRule{
			Host: "reviews",
			TrafficPolicy: &networking.TrafficPolicy{LoadBalancer: &networking.LoadBalancerSettings{
				LbPolicy: &networking.LoadBalancerSettings_ConsistentHash{ConsistentHash: &networking.LoadBalancerSettings_ConsistentHashLB{
					HashKey: &networking.LoadBalancerSettings_ConsistentHashLB_UseSourceIp{UseSourceIp: true},
				}},
			}},
		}}},
	}
	routes := vhost(t, buildValid(t, cfg), OutboundRouteName, reviewsHost+":9080").GetRoutes()
	if len(routes) != 1 {
		t.Fatalf("routes = %v, want the default route", routes)
	}
	a := routes[0].GetRoute()
	if len(a.GetHashPolicy()) != 1 || !a.GetHashPolicy()[0].GetConnectionProperties().GetSourceIp() {
		t.Errorf("hash_policy = %v, want the source IP", a.GetHashPolicy())
	}
	if len(a.GetRetryPolicy().GetRetryHostPredicate()) != 0 {
		t.Errorf("retry_policy = %v: a hashed route must retry on the same host", a.GetRetryPolicy())
	}
}

func TestLocalityFailoverNeedsOutlierDetectionAndCanBeDisabled(t *testing.T) {
	svc := httpService("default", "reviews", 9080)
	near := workload("default", "reviews-near", "127.0.1.3", map[string]string{"app": "reviews"})
	near.Spec.Locality = "us-east/zone-a"
	far := workload("default", "reviews-far", "127.0.1.4", map[string]string{"app": "reviews"})
	far.Spec.Locality = "eu-west/zone-b"
	client := workload("default", "productpage-v1", "127.0.1.2", map[string]string{"app": "productpage"})
	client.Spec.Locality = "us-east/zone-a"
	priorities := func(t *testing.T, policy *networking.TrafficPolicy) map[string]uint32 {
		t.Helper()
		cfg := &model.Config{
			ServiceEntries:  []*model.ServiceEntry{svc},
			WorkloadEntries: []*model.WorkloadEntry{client, near, far},
			DestinationRules: []*model.DestinationRule{{Meta: meta("DestinationRule", "default", "reviews"),
				Spec: &networking.DestinationRule{Host: "reviews", TrafficPolicy: policy}}},
		}
		out := map[string]uint32{}
		for _, cla := range buildValid(t, cfg).Endpoints {
			if cla.GetClusterName() == OutboundClusterName(9080, "", reviewsHost) {
				for _, g := range cla.GetEndpoints() {
					out[g.GetLocality().GetRegion()] = g.GetPriority()
				}
			}
		}
		return out
	}
	outlier := &networking.OutlierDetection{Consecutive_5XxErrors: wrapperspb.UInt32(1)}
	if got := priorities(t, &networking.TrafficPolicy{OutlierDetection: outlier}); got["us-east"] != 0 || got["eu-west"] != 1 {
		t.Errorf("with outlier detection, priorities = %v; want the client's region first (Istio's default)", got)
	}
	if got := priorities(t, &networking.TrafficPolicy{}); got["eu-west"] != 0 {
		t.Errorf("without outlier detection, priorities = %v; want one priority (nothing could fail over)", got)
	}
	disabled := &networking.TrafficPolicy{OutlierDetection: outlier, LoadBalancer: &networking.LoadBalancerSettings{
		LocalityLbSetting: &networking.LocalityLoadBalancerSetting{Enabled: wrapperspb.Bool(false)}}}
	if got := priorities(t, disabled); got["eu-west"] != 0 {
		t.Errorf("with localityLbSetting disabled, priorities = %v; want one priority", got)
	}
}
