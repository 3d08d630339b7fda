package main

import (
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
)

// edsCluster must agree with a full decode on the fields it reads, in
// whatever order and company they are encoded.
func TestEDSClusterAgreesWithAFullDecode(t *testing.T) {
	for _, cl := range []*clusterv3.Cluster{
		{Name: "outbound|8080||a.ns.svc.cluster.local", ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
			EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{EdsConfig: &corev3.ConfigSource{}}, ConnectTimeout: durationpb.New(1e9)},
		{Name: "PassthroughCluster", ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST}},
		{Name: "static", ConnectTimeout: durationpb.New(1e9)},
	} {
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(cl)
		if err != nil {
			t.Fatal(err)
		}
		name, eds := edsCluster(b)
		if name != cl.GetName() || eds != (cl.GetType() == clusterv3.Cluster_EDS) {
			t.Errorf("edsCluster(%s) = %q, %v; want %q, %v", cl.GetName(), name, eds, cl.GetName(), cl.GetType() == clusterv3.Cluster_EDS)
		}
	}
}
