package translate

import (
	"errors"
	"fmt"
	"maps"
	"sort"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/proto"

	"github.com/trellis-mesh/trellis/internal/model"
)

// BuildEndpoints returns exactly the ClusterLoadAssignments Build gives
// proxy for the clusters of hosts (every port and subset cluster of each
// host the proxy may see), sorted by cluster name, byte-equal to Build's:
// both come from the same cluster code. Hosts the proxy does not see, or
// that no service declares, give nothing.
//
// With model.EndpointDelta it lets a server answer an endpoint-only change
// by replacing those load assignments in an already translated snapshot.
func BuildEndpoints(snap *model.Snapshot, proxy *model.Proxy, hosts []string) ([]*endpointv3.ClusterLoadAssignment, error) {
	if snap == nil {
		return nil, errors.New("translate: nil snapshot")
	}
	if proxy == nil {
		return nil, errors.New("translate: nil proxy")
	}
	e := newEnvOf(snap, proxy, func(labels map[string]string) *model.Snapshot { return hostsView(snap, proxy, labels, hosts) })
	services := make([]*model.Service, 0, len(hosts))
	for _, h := range hosts {
		if svc := e.snap.Service(h); svc != nil {
			services = append(services, svc)
		}
	}
	_, clas, err := e.outboundClustersOf(services, false)
	if err != nil {
		return nil, fmt.Errorf("proxy %s: %w", proxy.ID, err)
	}
	sort.SliceStable(clas, func(i, j int) bool { return clas[i].GetClusterName() < clas[j].GetClusterName() })
	return clas, nil
}

// EndpointDelta is model.EndpointDelta that also requires both snapshots
// to carry the same learned auto-scopes (SetAutoScope): a scope change
// re-scopes whole proxies. It never attaches scopes itself.
func EndpointDelta(old, new *model.Snapshot) (model.EndpointChange, bool) {
	ch, ok := model.EndpointDelta(old, new)
	if !ok || !sameAutoScope(old, new) {
		return model.EndpointChange{}, false
	}
	return ch, true
}

func sameAutoScope(old, new *model.Snapshot) bool {
	// Not attached and attached empty read the same (AutoScope).
	a, _ := old.Memoized(autoScopeKey{})
	b, _ := new.Memoized(autoScopeKey{})
	am, _ := a.(map[string]*model.Sidecar)
	bm, _ := b.(map[string]*model.Sidecar)
	return maps.EqualFunc(am, bm, func(x, y *model.Sidecar) bool {
		return x == y || (x != nil && y != nil && x.Namespace == y.Namespace && x.Name == y.Name && proto.Equal(x.Spec, y.Spec))
	})
}
