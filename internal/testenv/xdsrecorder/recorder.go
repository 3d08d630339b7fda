// Package xdsrecorder is an ADS server for tests of xDS clients: go-control-plane's server over a
// snapshot cache the test fills, recording every request as it came over the wire, including those a
// server does not answer (Istio's health reports).
package xdsrecorder

import (
	"context"
	"net"
	"slices"
	"sync"
	"testing"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// Server serves ADS on Addr from Cache until the test ends.
type Server struct {
	Addr  string
	Cache cachev3.SnapshotCache

	mu   sync.Mutex
	reqs []*discoveryv3.DiscoveryRequest
}

// Start serves on a loopback port until the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	s := &Server{Cache: cachev3.NewSnapshotCache(true, cachev3.IDHash{}, nil)}
	ctx, cancel := context.WithCancel(context.Background())
	g := grpc.NewServer(grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		return h(srv, recordingStream{ServerStream: ss, s: s})
	}))
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(g, serverv3.NewServer(ctx, s.Cache, nil))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.Addr = ln.Addr().String()
	go func() { _ = g.Serve(ln) }()
	t.Cleanup(func() {
		g.Stop()
		cancel()
	})
	return s
}

// Requests are the SotW requests received so far, in order.
func (s *Server) Requests() []*discoveryv3.DiscoveryRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.reqs)
}

// RequestsOf are the requests of one type URL received so far, in order.
func (s *Server) RequestsOf(typeURL string) []*discoveryv3.DiscoveryRequest {
	return slices.DeleteFunc(s.Requests(), func(r *discoveryv3.DiscoveryRequest) bool { return r.GetTypeUrl() != typeURL })
}

type recordingStream struct {
	grpc.ServerStream
	s *Server
}

func (r recordingStream) RecvMsg(m any) error {
	err := r.ServerStream.RecvMsg(m)
	if req, ok := m.(*discoveryv3.DiscoveryRequest); ok && err == nil {
		r.s.mu.Lock()
		r.s.reqs = append(r.s.reqs, proto.Clone(req).(*discoveryv3.DiscoveryRequest))
		r.s.mu.Unlock()
	}
	return err
}
