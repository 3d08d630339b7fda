package hcm

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/trellis-mesh/trellis/internal/proxy/streaminfo"
)

func TestRedirectBuildsLocationFromTheRequest(t *testing.T) {
	p := newTestProxy(t, routeConfig(`
          - match: {prefix: "/old/"}
            redirect: {https_redirect: true, prefix_rewrite: "/new/", response_code: PERMANENT_REDIRECT}
          - match: {prefix: "/moved"}
            redirect: {host_redirect: "docs.example.com", port_redirect: 8443, path_redirect: "/home?lang=en"}
          - match: {prefix: "/"}
            redirect: {scheme_redirect: "https", strip_query: true, response_code: FOUND}
`)+routerOnly, nil)
	for _, tc := range []struct {
		path, host string
		code       int
		location   string
	}{
		{"/old/a?b=c", "shop.test", 308, "https://shop.test/new/a?b=c"},
		{"/moved/x?q=1", "shop.test:80", 301, "http://docs.example.com:8443/home?lang=en"},
		{"/a?secret=1", "shop.test:80", 302, "https://shop.test/a"},
	} {
		code, _, hdr := send(t, "GET", p.url+tc.path, nil, map[string]string{"Host": tc.host})
		if code != tc.code || hdr.Get("Location") != tc.location {
			t.Errorf("%s: got %d %q, want %d %q", tc.path, code, hdr.Get("Location"), tc.code, tc.location)
		}
	}
	if i := p.info(t, 1); i.ResponseCodeDetails != "direct_response" || i.ResponseCode != 308 {
		t.Fatalf("record: %q %d", i.ResponseCodeDetails, i.ResponseCode)
	}
}

func TestDirectResponseAnswersWithItsStatusAndBody(t *testing.T) {
	p := newTestProxy(t, routeConfig(`
          - match: {path: "/healthz"}
            direct_response: {status: 200, body: {inline_string: "ok\n"}}
          - match: {prefix: "/"}
            direct_response: {status: 403}
`)+routerOnly, nil)
	if code, body, hdr := send(t, "GET", p.url+"/healthz", nil, nil); code != 200 || body != "ok\n" || hdr.Get("Content-Type") != "text/plain" {
		t.Fatalf("got %d %q %v", code, body, hdr)
	}
	if code, body, _ := send(t, "GET", p.url+"/x", nil, nil); code != 403 || body != "" {
		t.Fatalf("got %d %q", code, body)
	}
}

// failing answers 503 to every request and counts them.
func failing(n *atomic.Int64) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, "bad")
	}
}

func TestRetryOn5xxMovesToAnotherHostAndReplaysTheBody(t *testing.T) {
	var badHits atomic.Int64
	bad := upstreamServer(t, "bad", failing(&badHits))
	good := upstreamServer(t, "good", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Attempt", r.Header.Get("X-Envoy-Attempt-Count"))
		_, _ = w.Write(b)
	})
	p := newTestProxy(t, `
      route_config:
        virtual_hosts:
        - name: vh
          domains: ["*"]
          include_request_attempt_count: true
          retry_policy: {retry_on: "5xx", num_retries: 1, retry_host_predicate: [{name: envoy.retry_host_predicates.previous_hosts}], host_selection_retry_max_attempts: 5}
          routes:
          - match: {prefix: "/"}
            route: {cluster: c}
`+routerOnly, map[string][]string{"c": {bad, good}})
	payload := strings.Repeat("payload-", 1000)
	for i := range 4 {
		code, body, hdr := send(t, "POST", p.url+"/", strings.NewReader(payload), nil)
		if code != 200 || body != payload {
			t.Fatalf("request %d: %d, body of %d bytes", i, code, len(body))
		}
		if a := hdr.Get("X-Attempt"); a != "1" && a != "2" {
			t.Fatalf("x-envoy-attempt-count %q", a)
		}
	}
	if badHits.Load() == 0 {
		t.Fatal("round robin never tried the failing host")
	}
	if got := p.counter("cluster.c.upstream_rq_retry"); got != uint64(badHits.Load()) {
		t.Fatalf("upstream_rq_retry = %d, failing host hit %d times", got, badHits.Load())
	}
	if got := p.counter("cluster.c.upstream_rq_retry_success"); got != uint64(badHits.Load()) {
		t.Fatalf("upstream_rq_retry_success = %d", got)
	}
}

func TestExhaustedRetriesReturnTheLastResponseWithFlagURX(t *testing.T) {
	var hits atomic.Int64
	bad := upstreamServer(t, "bad", failing(&hits))
	p := newTestProxy(t, `
      route_config:
        virtual_hosts:
        - name: vh
          domains: ["*"]
          include_attempt_count_in_response: true
          routes:
          - match: {prefix: "/"}
            route: {cluster: c, retry_policy: {retry_on: "gateway-error,retriable-status-codes", num_retries: 2, retry_back_off: {base_interval: 0.001s}}}
`+routerOnly, map[string][]string{"c": {bad}})
	code, body, hdr := send(t, "GET", p.url+"/", nil, nil)
	if code != 503 || body != "bad" || hits.Load() != 3 || hdr.Get("X-Envoy-Attempt-Count") != "3" {
		t.Fatalf("got %d %q after %d tries, attempt header %q", code, body, hits.Load(), hdr.Get("X-Envoy-Attempt-Count"))
	}
	i := p.info(t, 1)
	if !i.Flags.Has(streaminfo.UpstreamRetryLimitExceeded) || i.Attempts != 3 || i.ResponseCodeDetails != "via_upstream" {
		t.Fatalf("record: flags %v attempts %d details %q", i.Flags, i.Attempts, i.ResponseCodeDetails)
	}
}

func TestConnectFailureIsRetriedAndReportedAsUFURX(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	p := newTestProxy(t, routeConfig(`
          - match: {prefix: "/"}
            route: {cluster: c, retry_policy: {retry_on: "connect-failure"}}
`)+routerOnly, map[string][]string{"c": {dead}})
	code, body, _ := send(t, "GET", p.url+"/", nil, map[string]string{"Content-Type": "text/plain"})
	if code != 503 || !strings.Contains(body, "connection failure") {
		t.Fatalf("got %d %q", code, body)
	}
	i := p.info(t, 1)
	if i.Flags.String() != "UF,URX" || i.Attempts != 2 || i.ResponseCodeDetails != "upstream_reset_before_response_started{connection_failure}" || i.UpstreamHost != dead {
		t.Fatalf("record: flags %v attempts %d details %q host %q", i.Flags, i.Attempts, i.ResponseCodeDetails, i.UpstreamHost)
	}
}

func TestPerTryTimeoutRetriesAHungTry(t *testing.T) {
	var n atomic.Int64
	up := upstreamServer(t, "up", func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 1 {
			<-r.Context().Done() // hang until the proxy gives up on this try
			return
		}
		_, _ = io.WriteString(w, "second")
	})
	p := newTestProxy(t, routeConfig(`
          - match: {prefix: "/"}
            route: {cluster: c, timeout: 30s, retry_policy: {retry_on: "5xx", per_try_timeout: 0.3s}}
`)+routerOnly, map[string][]string{"c": {up}})
	if code, body, _ := send(t, "GET", p.url+"/", nil, nil); code != 200 || body != "second" {
		t.Fatalf("got %d %q", code, body)
	}
}

func TestTimeoutHeaderShortensTheRouteTimeout(t *testing.T) {
	up := upstreamServer(t, "up", func(_ http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
	p := newTestProxy(t, routeConfig(`
          - match: {prefix: "/"}
            route: {cluster: c, timeout: 60s}
`)+routerOnly, map[string][]string{"c": {up}})
	code, body, _ := send(t, "GET", p.url+"/", nil, map[string]string{"X-Envoy-Upstream-Rq-Timeout-Ms": "300"})
	if code != 504 || body != "upstream request timeout" {
		t.Fatalf("got %d %q", code, body)
	}
	if i := p.info(t, 1); i.Flags != streaminfo.UpstreamRequestTimeout || i.ResponseCodeDetails != "response_timeout" {
		t.Fatalf("flags %v details %q", i.Flags, i.ResponseCodeDetails)
	}
}

func TestMirrorSendsAShadowCopyAndIgnoresItsAnswer(t *testing.T) {
	shadowHosts := make(chan string, 4)
	mirror := upstreamServer(t, "mirror", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		shadowHosts <- r.Host + " " + string(b)
		w.WriteHeader(500)
	})
	main := upstreamServer(t, "main", nil)
	p := newTestProxy(t, routeConfig(`
          - match: {prefix: "/"}
            route: {cluster: main, request_mirror_policies: [{cluster: mirror, runtime_fraction: {default_value: {numerator: 100}}}]}
`)+routerOnly, map[string][]string{"main": {main}, "mirror": {mirror}})
	code, body, _ := send(t, "POST", p.url+"/", strings.NewReader("hello"), map[string]string{"Host": "reviews:9080"})
	if code != 200 || body != "main" {
		t.Fatalf("got %d %q", code, body)
	}
	select {
	case got := <-shadowHosts:
		if got != "reviews-shadow:9080 hello" {
			t.Fatalf("shadow request %q", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no shadow request")
	}
	// The shadow's answer is counted in the mirror cluster's stats, once its body is read.
	deadline := time.Now().Add(10 * time.Second)
	for p.counter("cluster.mirror.upstream_rq_5xx") != 1 || p.counter("cluster.mirror.upstream_rq_total") != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("mirror cluster stats: upstream_rq_total %d, upstream_rq_5xx %d, want 1 and 1",
				p.counter("cluster.mirror.upstream_rq_total"), p.counter("cluster.mirror.upstream_rq_5xx"))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestRecordOfARequestNamesRouteClusterHostAndBytes(t *testing.T) {
	up := upstreamServer(t, "up", nil)
	p := newTestProxy(t, routeConfig(`
          - name: all
            match: {prefix: "/"}
            route: {cluster: c}
`)+routerOnly, map[string][]string{"c": {up}})
	send(t, "POST", p.url+"/a?b", strings.NewReader("12345"), map[string]string{"Host": "svc"})
	i := p.info(t, 1)
	if i.Protocol != "HTTP/1.1" || i.Method != "POST" || i.Path != "/a?b" || i.Authority != "svc" || i.RouteName != "all" ||
		i.UpstreamCluster != "c" || i.UpstreamHost != up || i.Attempts != 1 || i.ResponseCode != 200 ||
		i.ResponseCodeDetails != "via_upstream" || i.Flags != 0 || i.BytesReceived != 5 || i.BytesSent != 2 ||
		i.DownstreamRemoteAddr == "" || i.DownstreamLocalAddr != p.addr || i.Duration <= 0 {
		t.Fatalf("record %+v", i)
	}
}

func TestLocalRepliesAreRecordedWithTheirFlags(t *testing.T) {
	p := newTestProxy(t, routeConfig(`
          - match: {prefix: "/nocluster"}
            route: {cluster: missing}
          - match: {prefix: "/empty"}
            route: {cluster: empty}
`)+routerOnly, map[string][]string{"empty": nil})
	p2 := newTestProxy(t, `
      route_config: {virtual_hosts: [{name: vh, domains: ["only.test"], routes: []}]}
`+routerOnly, nil)
	send(t, "GET", p.url+"/nocluster", nil, nil)
	send(t, "GET", p.url+"/empty", nil, nil)
	send(t, "GET", p2.url+"/", nil, nil)
	for _, tc := range []struct {
		i       streaminfo.Info
		code    int
		flags   string
		details string
	}{
		{p.info(t, 1), 503, "NC", "cluster_not_found"},
		{p.info(t, 2), 503, "UH", "no_healthy_upstream"},
		{p2.info(t, 1), 404, "NR", "route_not_found"},
	} {
		if tc.i.ResponseCode != tc.code || tc.i.Flags.String() != tc.flags || tc.i.ResponseCodeDetails != tc.details {
			t.Errorf("%s: got %d %v %q, want %d %s %q", tc.i.Path, tc.i.ResponseCode, tc.i.Flags, tc.i.ResponseCodeDetails, tc.code, tc.flags, tc.details)
		}
	}
}

func TestGRPCClientSeesUnavailableWhenNoUpstreamIsHealthy(t *testing.T) {
	p := newTestProxy(t, routeConfig(`
          - match: {prefix: "/"}
            route: {cluster: empty}
`)+routerOnly, map[string][]string{"empty": nil})
	conn, err := grpc.NewClient(p.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err = conn.Invoke(ctx, "/reviews.Reviews/Get", &emptypb.Empty{}, &emptypb.Empty{})
	st, _ := status.FromError(err)
	if st.Code() != codes.Unavailable || st.Message() != "no healthy upstream" {
		t.Fatalf("got %v", err)
	}
	if i := p.info(t, 1); i.Protocol != "HTTP/2" || i.ResponseCode != 200 || !i.Flags.Has(streaminfo.NoHealthyUpstream) {
		t.Fatalf("record: %s %d %v", i.Protocol, i.ResponseCode, i.Flags)
	}
}

func TestGRPCFaultAbortSendsItsGRPCStatus(t *testing.T) {
	p := newTestProxy(t, routeConfig(`
          - match: {prefix: "/"}
            route: {cluster: c}
`)+withFilters(`
      - name: envoy.filters.http.fault
        typed_config: {`+faultType+`, abort: {grpc_status: 9, percentage: {numerator: 100}}}`),
		map[string][]string{"c": nil})
	conn, err := grpc.NewClient(p.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err = conn.Invoke(ctx, "/x.Y/Z", &emptypb.Empty{}, &emptypb.Empty{})
	if st, _ := status.FromError(err); st.Code() != codes.FailedPrecondition || st.Message() != "fault filter abort" {
		t.Fatalf("got %v", err)
	}
}

func TestUpstreamProtocolErrorIsReportedAsUPE(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				// Read the whole request first, so the answer is not raced by a reset.
				br := bufio.NewReader(c)
				for {
					line, err := br.ReadString('\n')
					if err != nil || line == "\r\n" {
						break
					}
				}
				_, _ = c.Write([]byte("SSH-2.0-not-http\r\n\r\n"))
			}()
		}
	}()
	p := newTestProxy(t, routeConfig(`
          - match: {prefix: "/"}
            route: {cluster: c}
`)+routerOnly, map[string][]string{"c": {ln.Addr().String()}})
	code, body, _ := send(t, "GET", p.url+"/", nil, nil)
	if code != 503 || !strings.HasSuffix(body, "protocol error") {
		t.Fatalf("got %d %q", code, body)
	}
	if i := p.info(t, 1); i.Flags != streaminfo.UpstreamProtocolError || i.ResponseCodeDetails != "upstream_reset_before_response_started{protocol_error}" {
		t.Fatalf("flags %v details %q", i.Flags, i.ResponseCodeDetails)
	}
}
