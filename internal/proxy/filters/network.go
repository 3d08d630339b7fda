package filters

import (
	"context"
	"net"

	udpatypev1 "github.com/cncf/xds/go/udpa/type/v1"
	xdstypev3 "github.com/cncf/xds/go/xds/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/trellis-mesh/trellis/internal/proxy/streaminfo"
)

// ConnObserver watches the connections of a TCP proxy (a network filter before tcp_proxy that
// only observes, as Istio's TCP stats filter). Both calls get the connection's record, valid during
// the call only, and must not block.
type ConnObserver interface {
	// OnUpstreamConnected runs once the upstream connection is up (its host is in info).
	OnUpstreamConnected(info *streaminfo.Info)
	// OnConnClosed runs when the connection is done, whether or not it reached an upstream.
	OnConnClosed(info *streaminfo.Info)
}

// ConnObserverConfig is such a network filter's parsed config; BuildConnObserver makes the running
// observer for one filter chain.
type ConnObserverConfig interface {
	BuildConnObserver(env Env) ConnObserver
}

// ConnAuthorizer is implemented by a ConnObserver that may refuse a connection (RBAC). The TCP
// proxy calls it once per connection, before it dials the upstream; false closes the connection,
// the record saying why. It may block (a delayed denial) until ctx ends.
type ConnAuthorizer interface {
	AuthorizeConn(ctx context.Context, c net.Conn, info *streaminfo.Info) bool
}

// NetworkFactory is how the conversion layer knows one kind of network filter before tcp_proxy.
type NetworkFactory struct {
	Name       string
	ConfigType string
	Parse      func(tc *anypb.Any) (ConnObserverConfig, error)
	// ParseWithConverters, when set, is used instead of Parse, lending the conversion layer's
	// matchers to filters whose config holds some (RBAC).
	ParseWithConverters func(tc *anypb.Any, conv Converters) (ConnObserverConfig, error)
}

// The type URLs of the typed structs Istio wraps extension configs in.
const (
	udpaTypedStruct = "type.googleapis.com/udpa.type.v1.TypedStruct"
	xdsTypedStruct  = "type.googleapis.com/xds.type.v3.TypedStruct"
)

// ConfigType is the type URL a typed_config stands for: its own, or for a TypedStruct (udpa or
// xds) the one it wraps.
func ConfigType(tc *anypb.Any) string {
	_, typeURL, ok := typedStruct(tc)
	if ok {
		return typeURL
	}
	return tc.GetTypeUrl()
}

// TypedStructValue unwraps a TypedStruct: its value and the type URL it stands for. ok is false
// when tc is not a TypedStruct.
func TypedStructValue(tc *anypb.Any) (value *structpb.Struct, typeURL string, ok bool) {
	return typedStruct(tc)
}

func typedStruct(tc *anypb.Any) (*structpb.Struct, string, bool) {
	switch tc.GetTypeUrl() {
	case udpaTypedStruct:
		var ts udpatypev1.TypedStruct
		if err := tc.UnmarshalTo(&ts); err != nil {
			return nil, "", false
		}
		return ts.GetValue(), ts.GetTypeUrl(), true
	case xdsTypedStruct:
		var ts xdstypev3.TypedStruct
		if err := tc.UnmarshalTo(&ts); err != nil {
			return nil, "", false
		}
		return ts.GetValue(), ts.GetTypeUrl(), true
	}
	return nil, "", false
}
