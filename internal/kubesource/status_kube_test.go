package kubesource_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	networking "istio.io/api/networking/v1alpha3"
	istiov1 "istio.io/client-go/pkg/apis/networking/v1"
	istioclient "istio.io/client-go/pkg/clientset/versioned"
	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trellis-mesh/trellis/internal/controlplane"
	"github.com/trellis-mesh/trellis/internal/kubesource"
	"github.com/trellis-mesh/trellis/internal/testenv/kubeenv"
)

// Short Lease timings, so that a takeover happens within the test's
// deadlines; generous enough for a loaded machine to renew in time.
var testLease = kubesource.ElectorOptions{LeaseDuration: 3 * time.Second, RenewDeadline: 2 * time.Second, RetryPeriod: 250 * time.Millisecond}

// replica runs one control plane replica in Kubernetes mode, its Lease in
// ns; the returned func stops it (and waits), as killing its Pod would.
func replica(t *testing.T, kube *kubeenv.Env, ns, identity string) (stop func()) {
	t.Helper()
	_, stop = replicaWith(t, kube, ns, identity, nil)
	return stop
}

// replicaWith is replica with its options adjusted by tweak; it also
// returns the xDS address.
func replicaWith(t *testing.T, kube *kubeenv.Env, ns, identity string, tweak func(*controlplane.Options)) (addr string, stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	lease := testLease
	lease.Identity = identity
	ready := make(chan controlplane.Ready, 1)
	done := make(chan error, 1)
	opts := controlplane.Options{
		Kubernetes:     kube.Config(),
		IstioNamespace: ns,
		XDSAddress:     "127.0.0.1:0",
		Logger:         slog.New(slog.NewTextHandler(t.Output(), nil)).With("replica", identity),
		Ready:          func(r controlplane.Ready) { ready <- r },
		LeaderElection: lease,
	}
	if tweak != nil {
		tweak(&opts)
	}
	go func() { done <- controlplane.Run(ctx, opts) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run %s: %v", identity, err)
			}
		case <-time.After(15 * time.Second):
			t.Errorf("Run %s did not return after cancel", identity)
		}
	}
	t.Cleanup(stop)
	select {
	case r := <-ready:
		addr = r.XDSAddr.String()
	case err := <-done:
		t.Fatalf("Run %s: %v", identity, err)
	case <-time.After(30 * time.Second):
		t.Fatalf("replica %s not ready", identity)
	}
	return addr, stop
}

// istioNamespace is the shared API server with Istio's CRDs, a fresh
// namespace in it, and an Istio client.
func istioNamespace(t *testing.T) (*kubeenv.Env, string, istioclient.Interface) {
	t.Helper()
	kube := kubeenv.Shared(t)
	kube.InstallIstioCRDs(t)
	ic := kube.IstioClient(t)
	return kube, kube.Namespace(t), ic
}

// badWeights is a VirtualService the CRD's schema accepts and Istio's
// validation rejects: route weights summing to 90.
func badWeights(name string, w int32) *istiov1.VirtualService {
	return &istiov1.VirtualService{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: networking.VirtualService{
		Hosts: []string{name}, Http: []*networking.HTTPRoute{{Route: []*networking.HTTPRouteDestination{
			{Destination: &networking.Destination{Host: "a"}, Weight: w},
			{Destination: &networking.Destination{Host: "b"}, Weight: 20},
		}}}}}
}

// awaitStatus polls the VirtualService until ok accepts its status.
func awaitStatus(t *testing.T, ic istioclient.Interface, ns, name, what string, ok func(*istiov1.VirtualService) bool) *istiov1.VirtualService {
	t.Helper()
	start := time.Now()
	for time.Since(start) < 3*within {
		vs, err := ic.NetworkingV1().VirtualServices(ns).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if ok(vs) {
			t.Logf("%s after %v", what, time.Since(start).Round(time.Millisecond))
			return vs
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("VirtualService %s/%s: %s not seen within %v", ns, name, what, 3*within)
	return nil
}

func hasValidationError(vs *istiov1.VirtualService) bool {
	for _, m := range vs.Status.GetValidationMessages() {
		if m.GetType().GetCode() == kubesource.StatusCode && m.GetLevel().String() == "ERROR" {
			return true
		}
	}
	return false
}

func conditionMessage(vs *istiov1.VirtualService) string {
	for _, c := range vs.Status.GetConditions() {
		if c.GetType() == kubesource.StatusCondition {
			return c.GetMessage()
		}
	}
	return ""
}

func leaseHolder(t *testing.T, kube *kubeenv.Env, ns string) string {
	t.Helper()
	l, err := kube.Client().CoordinationV1().Leases(ns).Get(context.Background(), kubesource.DefaultLeaseName, metav1.GetOptions{})
	if err != nil {
		return ""
	}
	if l.Spec.HolderIdentity == nil {
		return ""
	}
	return *l.Spec.HolderIdentity
}

// A replica that does not hold the Lease leaves status and Events alone
// (it still serves the last good config and reports the problem to its
// caller); once the Lease is its own it writes Istio's validationMessages
// and the problem's text, records the Event, and clears the status when
// the resource is fixed.
func TestOnlyTheLeaseHolderWritesValidationStatus(t *testing.T) {
	kube, ns, ic := istioNamespace(t)
	ctx := context.Background()
	// Another replica holds the Lease, then goes away without releasing it.
	if _, err := kube.Client().CoordinationV1().Leases(ns).Create(ctx, &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: kubesource.DefaultLeaseName},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr("gone"), LeaseDurationSeconds: ptr[int32](5),
			AcquireTime: &metav1.MicroTime{Time: time.Now()}, RenewTime: &metav1.MicroTime{Time: time.Now()}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	rejected := make(chan struct{}, 1)
	replicaWith(t, kube, ns, "a", func(o *controlplane.Options) {
		o.OnConfigError = func(err error) {
			if strings.Contains(err.Error(), "VirtualService "+ns+"/bad") {
				select {
				case rejected <- struct{}{}:
				default:
				}
			}
		}
	})
	if _, err := ic.NetworkingV1().VirtualServices(ns).Create(ctx, badWeights("bad", 70), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	c := &cluster{kube: kube.Client(), ns: ns}
	select {
	case <-rejected: // replica a has validated it
	case <-time.After(within):
		t.Fatalf("replica a did not reject VirtualService bad within %v", within)
	}
	if h := leaseHolder(t, kube, ns); h == "gone" {
		time.Sleep(500 * time.Millisecond) // room for a write that should not come
		vs, err := ic.NetworkingV1().VirtualServices(ns).Get(ctx, "bad", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if hasValidationError(vs) || conditionMessage(vs) != "" {
			t.Fatalf("a follower wrote status while %q held the Lease: %v", h, vs.Status.String())
		}
		if evs := validationEvents(t, c, "VirtualService", "bad"); len(evs) > 0 && leaseHolder(t, kube, ns) == "gone" {
			t.Fatalf("a follower recorded an Event while %q held the Lease: %s", h, evs[0].Message)
		}
	} else {
		t.Logf("the Lease expired before the check (holder %q); the follower check is skipped", h)
	}

	vs := awaitStatus(t, ic, ns, "bad", "IST0106 in status", func(vs *istiov1.VirtualService) bool {
		return hasValidationError(vs) && conditionMessage(vs) != ""
	})
	if h := leaseHolder(t, kube, ns); h != "a" {
		t.Fatalf("status written while the Lease holder is %q, want a", h)
	}
	if msg := conditionMessage(vs); !strings.Contains(msg, "spec.http[0].route[1].weight") || !strings.Contains(msg, "sum to 100") {
		t.Errorf("condition message %q does not give the field path and the reason", msg)
	}
	if msg := awaitEvent(t, c, "VirtualService", "bad"); msg != conditionMessage(vs) {
		t.Errorf("the leader's Event says %q, the status %q", msg, conditionMessage(vs))
	}
	if vs.Status.GetObservedGeneration() != vs.Generation {
		t.Errorf("observedGeneration = %d, want %d", vs.Status.GetObservedGeneration(), vs.Generation)
	}

	vs.Spec.Http[0].Route[0].Weight = 80
	if _, err := ic.NetworkingV1().VirtualServices(ns).Update(ctx, vs, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	awaitStatus(t, ic, ns, "bad", "status cleared once valid", func(vs *istiov1.VirtualService) bool {
		return !hasValidationError(vs) && conditionMessage(vs) == "" && vs.Status.GetObservedGeneration() == vs.Generation
	})
}

// Of two replicas exactly one holds the Lease; when it stops, the other
// takes over and writes status.
func TestSecondReplicaTakesOverStatusWhenLeaderStops(t *testing.T) {
	kube, ns, ic := istioNamespace(t)
	ctx := context.Background()
	stops := map[string]func(){"a": replica(t, kube, ns, "a"), "b": replica(t, kube, ns, "b")}

	if _, err := ic.NetworkingV1().VirtualServices(ns).Create(ctx, badWeights("first", 70), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	awaitStatus(t, ic, ns, "first", "status by the leader", hasValidationError)
	c := &cluster{kube: kube.Client(), ns: ns}
	awaitEvent(t, c, "VirtualService", "first")
	leader := leaseHolder(t, kube, ns)
	if stops[leader] == nil {
		t.Fatalf("Lease holder %q is neither replica", leader)
	}
	other := map[string]string{"a": "b", "b": "a"}[leader]
	stops[leader]()

	if _, err := ic.NetworkingV1().VirtualServices(ns).Create(ctx, badWeights("second", 60), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	awaitStatus(t, ic, ns, "second", "status by the new leader", hasValidationError)
	if h := leaseHolder(t, kube, ns); h != other {
		t.Fatalf("Lease holder after %s stopped = %q, want %s", leader, h, other)
	}
	awaitEvent(t, c, "VirtualService", "second")
	// Both replicas validated "first"; one Event was recorded for it, by
	// the first leader, and its successor found the problem in its status.
	time.Sleep(500 * time.Millisecond) // room for Events that should not come
	if evs := validationEvents(t, c, "VirtualService", "first"); len(evs) != 1 || evs[0].Count > 1 {
		var got []string
		for _, ev := range evs {
			got = append(got, fmt.Sprintf("%s (count %d, from %s)", ev.Message, ev.Count, ev.Source.Host))
		}
		t.Errorf("VirtualService first has %d %s Events, want one: %v", len(evs), kubesource.ReasonValidationFailed, got)
	}
}
