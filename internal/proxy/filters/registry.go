package filters

import (
	"fmt"
	"slices"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/trellis-mesh/trellis/internal/proxy/route"
)

// Factory is how the conversion layer knows one kind of HTTP filter.
type Factory struct {
	// Name is Envoy's canonical filter name ("envoy.filters.http.fault"); an http_filters entry
	// without typed_config is matched by it.
	Name string
	// ConfigType is the full type URL of the filter's typed_config.
	ConfigType string
	// PerRouteTypes are the type URLs its typed_per_filter_config may have.
	PerRouteTypes []string
	// Parse converts the filter's typed_config (nil when the entry had none).
	Parse func(tc *anypb.Any, conv Converters) (Config, error)
	// ParsePerRoute converts one typed_per_filter_config entry; the result is what OnRequest gets as
	// perRoute.
	ParsePerRoute func(tc *anypb.Any, conv Converters) (any, error)
}

// Converters are the conversion layer's matcher conversions, lent to filters so that matchers mean
// the same everywhere.
type Converters struct {
	StringMatcher func(*matcherv3.StringMatcher) (route.StringMatcher, error)
	HeaderMatcher func(*routev3.HeaderMatcher) (route.HeaderMatcher, error)
}

// Registry is the ordered list of known filters.
type Registry struct {
	factories []*Factory
}

// NewRegistry lists factories in the order given; a type URL may belong to one factory only.
func NewRegistry(factories ...*Factory) *Registry {
	return &Registry{factories: factories}
}

// ByConfigType finds the factory whose typed_config has the given type URL.
func (r *Registry) ByConfigType(typeURL string) *Factory {
	for _, f := range r.factories {
		if f.ConfigType == typeURL {
			return f
		}
	}
	return nil
}

// ByName finds the factory with Envoy's canonical filter name.
func (r *Registry) ByName(name string) *Factory {
	for _, f := range r.factories {
		if f.Name == name {
			return f
		}
	}
	return nil
}

// ByPerRouteType finds the factory that parses per-route config of the given type URL.
func (r *Registry) ByPerRouteType(typeURL string) *Factory {
	for _, f := range r.factories {
		if slices.Contains(f.PerRouteTypes, typeURL) {
			return f
		}
	}
	return nil
}

// OnlyFields fails on the first populated field of m whose name is not in allowed, as the
// conversion layer does: a filter rejects what it cannot honour rather than ignoring it.
func OnlyFields(m proto.Message, allowed ...string) error {
	var bad protoreflect.Name
	m.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, _ protoreflect.Value) bool {
		if !slices.Contains(allowed, string(fd.Name())) {
			bad = fd.Name()
			return false
		}
		return true
	})
	if bad != "" {
		return fmt.Errorf("%s: %w", bad, ErrUnsupported)
	}
	return nil
}

// Unmarshal decodes tc into m and validates it with its protoc-gen-validate rules.
func Unmarshal(tc *anypb.Any, m interface {
	proto.Message
	Validate() error
}) error {
	if err := anypb.UnmarshalTo(tc, m, proto.UnmarshalOptions{}); err != nil {
		return err
	}
	return m.Validate()
}
