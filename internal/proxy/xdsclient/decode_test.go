package xdsclient

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
)

func mustAny(t *testing.T, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestDecodeRejectsWholeResponseOnAnyBadResource(t *testing.T) {
	l1 := &listenerv3.Listener{Name: "l1"}
	wrapped := mustAny(t, &discoveryv3.Resource{Name: "l2", Resource: mustAny(t, &listenerv3.Listener{Name: "l2"})})
	for _, tc := range []struct {
		name    string
		typeURL string
		anys    []*anypb.Any
		want    []string // names decoded
		wantErr string   // substring of the error
	}{
		{name: "listeners", typeURL: ListenerType, anys: []*anypb.Any{mustAny(t, l1), wrapped}, want: []string{"l1", "l2"}},
		{name: "empty response", typeURL: ClusterType, want: nil},
		{name: "cluster load assignment named by cluster", typeURL: EndpointType,
			anys: []*anypb.Any{mustAny(t, &endpointv3.ClusterLoadAssignment{ClusterName: "c1"})}, want: []string{"c1"}},
		{name: "wrong type", typeURL: ListenerType, anys: []*anypb.Any{mustAny(t, l1), mustAny(t, &clusterv3.Cluster{Name: "c"})},
			wantErr: `Listener response: resource 1 has type "type.googleapis.com/envoy.config.cluster.v3.Cluster"`},
		{name: "garbage bytes", typeURL: ListenerType, anys: []*anypb.Any{{TypeUrl: ListenerType, Value: []byte{0xff, 0xff}}},
			wantErr: "Listener response: resource 0: unmarshal"},
		{name: "duplicate name", typeURL: ListenerType, anys: []*anypb.Any{mustAny(t, l1), mustAny(t, l1)},
			wantErr: `duplicate Listener "l1"`},
		{name: "no name", typeURL: ClusterType, anys: []*anypb.Any{mustAny(t, &clusterv3.Cluster{})},
			wantErr: "Cluster response: resource 0 has no name"},
		{name: "fails validation", typeURL: ClusterType,
			anys:    []*anypb.Any{mustAny(t, &clusterv3.Cluster{Name: "c1", ConnectTimeout: durationpb.New(-time.Second)})},
			wantErr: `Cluster "c1": invalid Cluster.ConnectTimeout`},
		{name: "empty wrapper", typeURL: ListenerType, anys: []*anypb.Any{mustAny(t, &discoveryv3.Resource{Name: "x"})},
			wantErr: `Resource wrapper without a resource`},
		{name: "unsupported type", typeURL: "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
			wantErr: "unsupported resource type"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := decode(tc.typeURL, tc.anys)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("decode error = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			var names []string
			for _, m := range sortedResources(got) {
				names = append(names, ResourceName(m))
			}
			if !slices.Equal(names, tc.want) {
				t.Errorf("decoded %v, want %v", names, tc.want)
			}
		})
	}
}

func TestEDSResponsesMergeIntoTheSubscribedSet(t *testing.T) {
	w := newRecorder(false)
	c := New(Config{Address: "127.0.0.1:1", Watcher: w, Logger: testLogger(t)})
	cla := func(name string, port uint32) *anypb.Any {
		return mustAny(t, &endpointv3.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpointv3.LocalityLbEndpoints{{
			LbEndpoints: []*endpointv3.LbEndpoint{{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{
				Endpoint: &endpointv3.Endpoint{Address: socketAddress("127.0.1.2", port)}}}},
		}}})
	}
	c.Subscribe(EndpointType, []string{"c1", "c2"})
	steps := []struct {
		name      string
		subscribe []string // applied first when non-nil
		response  []*anypb.Any
		want      []string // names the watcher holds afterwards
		wantCalls int
	}{
		{name: "unsubscribed c3 is ignored", response: []*anypb.Any{cla("c1", 1), cla("c3", 1)}, want: []string{"c1"}, wantCalls: 1},
		{name: "a partial response keeps c1", response: []*anypb.Any{cla("c2", 1)}, want: []string{"c1", "c2"}, wantCalls: 2},
		{name: "an identical resend is not delivered", response: []*anypb.Any{cla("c1", 1), cla("c2", 1)}, want: []string{"c1", "c2"}, wantCalls: 2},
		{name: "dropping c1 forgets it", subscribe: []string{"c2"}, response: []*anypb.Any{cla("c2", 2)}, want: []string{"c2"}, wantCalls: 3},
	}
	for _, st := range steps {
		if st.subscribe != nil {
			c.Subscribe(EndpointType, st.subscribe)
			c.prune(EndpointType, c.subscribed(EndpointType))
		}
		if err := c.accept(EndpointType, "v", st.response); err != nil {
			t.Fatalf("%s: accept: %v", st.name, err)
		}
		if got := w.names(EndpointType); !slices.Equal(got, st.want) {
			t.Errorf("%s: watcher holds %v, want %v", st.name, got, st.want)
		}
		if n := w.callCount(EndpointType); n != st.wantCalls {
			t.Errorf("%s: watcher called %d times, want %d", st.name, n, st.wantCalls)
		}
	}
}

func TestNACKRetryDelayDoublesToItsCap(t *testing.T) {
	c := New(Config{})
	want := []time.Duration{200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond, 1600 * time.Millisecond,
		3200 * time.Millisecond, 5 * time.Second, 5 * time.Second}
	for i, w := range want {
		if got := c.nackRetryDelay(i + 1); got != w {
			t.Errorf("streak %d: delay %v, want %v", i+1, got, w)
		}
	}
}

// The proxy must not link the control plane: neither Trellis's own packages nor go-control-plane's
// server, cache or resource packages (only the generated API types).
func TestPackageDoesNotLinkControlPlaneLibraries(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go command not found")
	}
	out, err := exec.Command(goBin, "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if strings.HasPrefix(pkg, "github.com/envoyproxy/go-control-plane/pkg/") ||
			(strings.HasPrefix(pkg, "github.com/trellis-mesh/trellis/") && pkg != "github.com/trellis-mesh/trellis/internal/proxy/xdsclient") {
			t.Errorf("xdsclient links %s", pkg)
		}
	}
}
