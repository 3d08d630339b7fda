package proxyadmin

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/emptypb"

	// The types a config dump holds and this package reads; others decode as
	// empty Anys (see lenientResolver).
	_ "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
)

// maxBody bounds what is read from the admin API (a large mesh's config dump
// is megabytes; this is far above that).
const maxBody = 256 << 20

// Client reads one proxy's admin API.
type Client struct {
	// Addr is the admin API's host:port (Istio's 15000).
	Addr string
	// HTTP is the client to use; nil means http.DefaultClient.
	HTTP *http.Client
}

// ConfigDump is GET /config_dump.
func (c Client) ConfigDump(ctx context.Context) (*adminv3.ConfigDump, error) {
	d := &adminv3.ConfigDump{}
	if err := c.get(ctx, "/config_dump", d); err != nil {
		return nil, err
	}
	return d, nil
}

// Certs is GET /certs.
func (c Client) Certs(ctx context.Context) (*adminv3.Certificates, error) {
	out := &adminv3.Certificates{}
	if err := c.get(ctx, "/certs", out); err != nil {
		return nil, err
	}
	return out, nil
}

func (c Client) get(ctx context.Context, path string, into proto.Message) error {
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+c.Addr+path, nil)
	if err != nil {
		return fmt.Errorf("proxy admin %q: %w", c.Addr, err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach the proxy's admin API at %s: %w", c.Addr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return fmt.Errorf("proxy admin %s: GET %s: %w", c.Addr, path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("proxy admin %s: GET %s: %s: %s", c.Addr, path, resp.Status, strings.TrimSpace(string(body[:min(len(body), 512)])))
	}
	if err := Decode(body, into); err != nil {
		return fmt.Errorf("proxy admin %s: GET %s: %w", c.Addr, path, err)
	}
	return nil
}

// Decode reads admin JSON (Envoy's proto JSON) into m. Fields and Any types
// this build does not know are skipped, not errors: a proxy may run
// extensions (Istio's, a newer Envoy's) that have nothing to do with what is
// being asked.
func Decode(b []byte, m proto.Message) error {
	return protojson.UnmarshalOptions{DiscardUnknown: true, Resolver: lenientResolver{}}.Unmarshal(b, m)
}

// lenientResolver resolves Any type URLs from the linked-in registry, and an
// unknown one to an empty message, so the Any keeps its type URL and loses
// only a body nobody here could read.
type lenientResolver struct{}

func (lenientResolver) FindMessageByName(n protoreflect.FullName) (protoreflect.MessageType, error) {
	return protoregistry.GlobalTypes.FindMessageByName(n)
}

func (lenientResolver) FindMessageByURL(url string) (protoreflect.MessageType, error) {
	if mt, err := protoregistry.GlobalTypes.FindMessageByURL(url); err == nil {
		return mt, nil
	}
	return (&emptypb.Empty{}).ProtoReflect().Type(), nil
}

func (lenientResolver) FindExtensionByName(n protoreflect.FullName) (protoreflect.ExtensionType, error) {
	return protoregistry.GlobalTypes.FindExtensionByName(n)
}

func (lenientResolver) FindExtensionByNumber(m protoreflect.FullName, f protoreflect.FieldNumber) (protoreflect.ExtensionType, error) {
	return protoregistry.GlobalTypes.FindExtensionByNumber(m, f)
}
