package admin

import (
	"net/http/httptest"
	"strings"
	"testing"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/trellis-mesh/trellis/internal/proxy/listener"
	"github.com/trellis-mesh/trellis/internal/proxy/stats"
	"github.com/trellis-mesh/trellis/internal/proxy/upstream"
)

type clusterSource []*upstream.Cluster

func (s clusterSource) Ready() (string, bool)                     { return "LIVE", true }
func (s clusterSource) ConfigDump() (*adminv3.ConfigDump, error)  { return &adminv3.ConfigDump{}, nil }
func (s clusterSource) Clusters() []*upstream.Cluster             { return s }
func (s clusterSource) Listeners() []listener.Info                { return nil }
func (s clusterSource) DrainListeners(inboundOnly, graceful bool) {}

func TestClustersPrintsEnvoysPerHostAndPerClusterLines(t *testing.T) {
	od := upstream.DefaultOutlierConfig
	od.Consecutive5xx, od.MaxEjectionPercent = 1, 100
	c := upstream.New(upstream.Config{Name: "outbound|80||web", Type: upstream.EDS, EDSServiceName: "web", Outlier: &od,
		CircuitBreakers: upstream.CircuitBreakers{Default: upstream.Thresholds{Set: true, MaxConnections: 7, MaxPendingRequests: 8, MaxRequests: 9, MaxRetries: 1}}}, stats.NewStore())
	t.Cleanup(c.Close)
	c.SetEndpoints([]upstream.Endpoint{
		{Address: "10.0.0.1:80", Weight: 3, Healthy: true, Locality: upstream.Locality{Region: "eu", Zone: "eu-1", SubZone: "a"}, Hostname: "web-1"},
		{Address: "10.0.0.2:80", Weight: 1, Priority: 1, Healthy: false},
	})
	c.ReportResponse(c.Hosts()[0], 500)
	s := New(Config{Source: clusterSource{c}})
	rec := httptest.NewRecorder()
	s.clusters(rec, httptest.NewRequest("GET", "/clusters", nil))
	body := rec.Body.String()
	for _, want := range []string{
		"outbound|80||web::observability_name::outbound|80||web\n",
		"outbound|80||web::outlier::success_rate_average::-1\n",
		"outbound|80||web::default_priority::max_connections::7\n",
		"outbound|80||web::default_priority::max_pending_requests::8\n",
		"outbound|80||web::default_priority::max_requests::9\n",
		"outbound|80||web::default_priority::max_retries::1\n",
		"outbound|80||web::high_priority::max_connections::1024\n",
		"outbound|80||web::eds_service_name::web\n",
		"outbound|80||web::10.0.0.1:80::cx_active::0\n",
		"outbound|80||web::10.0.0.1:80::rq_total::0\n",
		"outbound|80||web::10.0.0.1:80::hostname::web-1\n",
		"outbound|80||web::10.0.0.1:80::health_flags::/failed_outlier_check\n",
		"outbound|80||web::10.0.0.1:80::weight::3\n",
		"outbound|80||web::10.0.0.1:80::region::eu\n",
		"outbound|80||web::10.0.0.1:80::zone::eu-1\n",
		"outbound|80||web::10.0.0.1:80::sub_zone::a\n",
		"outbound|80||web::10.0.0.1:80::canary::false\n",
		"outbound|80||web::10.0.0.1:80::success_rate::-1\n",
		"outbound|80||web::10.0.0.2:80::health_flags::/failed_eds_health\n",
		"outbound|80||web::10.0.0.2:80::priority::1\n",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("missing %q in\n%s", want, body)
		}
	}
	rec = httptest.NewRecorder()
	s.clusters(rec, httptest.NewRequest("GET", "/clusters?format=json", nil))
	var cs adminv3.Clusters
	if err := protojson.Unmarshal(rec.Body.Bytes(), &cs); err != nil {
		t.Fatal(err)
	}
	st := cs.ClusterStatuses[0]
	if st.EdsServiceName != "web" || len(st.HostStatuses) != 2 || !st.HostStatuses[0].HealthStatus.FailedOutlierCheck ||
		st.HostStatuses[0].Locality.GetZone() != "eu-1" || st.CircuitBreakers.Thresholds[0].MaxRequests.GetValue() != 9 {
		t.Fatalf("json: %v", st)
	}
}
