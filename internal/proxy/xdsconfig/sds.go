package xdsconfig

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
)

// The SDS secrets trellis-proxy's built-in identity agent serves, named as Istio's agent names them,
// and the cluster Istio points SdsSecretConfig at (its agent's Unix socket; no such cluster needs
// to exist here).
const (
	SDSWorkloadSecret = "default"
	SDSRootSecret     = "ROOTCA"
	SDSCluster        = "sds-grpc"
)

// SecretSource serves SDS secrets by name when a handshake needs them: the identity agent's store.
// A secret it does not hold yet is an error, which fails that handshake only.
type SecretSource interface {
	// Certificate returns a tls_certificate_sds_secret_configs secret.
	Certificate(name string) (*tls.Certificate, error)
	// TrustBundle returns a validation_context_sds_secret_config secret's CA pool.
	TrustBundle(name string) (*x509.CertPool, error)
}

// Option changes how resources are converted.
type Option func(*options)

type options struct {
	secrets SecretSource
}

// WithSecrets serves the SDS secrets that TLS contexts reference from s. Without it such contexts are
// still accepted (the control plane's config is valid), but their handshakes fail.
func WithSecrets(s SecretSource) Option {
	return func(o *options) { o.secrets = s }
}

func newOptions(opts []Option) *options {
	o := &options{}
	for _, f := range opts {
		f(o)
	}
	if o.secrets == nil {
		o.secrets = noSecrets{}
	}
	return o
}

// errNoAgent is what handshakes needing a secret get when the proxy runs without an agent.
var errNoAgent = errors.New("SDS secrets need the identity agent, and trellis-proxy runs without one (--ca-address)")

type noSecrets struct{}

func (noSecrets) Certificate(string) (*tls.Certificate, error) { return nil, errNoAgent }
func (noSecrets) TrustBundle(string) (*x509.CertPool, error)   { return nil, errNoAgent }

// sdsSecret checks an SdsSecretConfig: it must name want and come from Istio's agent source
// ({api_config_source: {api_type: GRPC, grpc_services: [{envoy_grpc: {cluster_name: sds-grpc}}]}}).
func sdsSecret(s *tlsv3.SdsSecretConfig, want string) (string, error) {
	if err := onlyFields(s, "name", "sds_config"); err != nil {
		return "", err
	}
	if s.GetName() != want {
		return "", fmt.Errorf("name %q: the identity agent serves only %q here: %w", s.GetName(), want, ErrUnsupported)
	}
	src := s.GetSdsConfig()
	if src == nil {
		return "", fmt.Errorf("sds_config: static secrets (bootstrap static_resources.secrets) are %w", ErrUnsupported)
	}
	if err := sdsSource(src); err != nil {
		return "", fmt.Errorf("sds_config.%w", err)
	}
	return want, nil
}

func sdsSource(src *corev3.ConfigSource) error {
	if err := onlyFields(src, "api_config_source", "resource_api_version", "initial_fetch_timeout"); err != nil {
		return err
	}
	api := src.GetApiConfigSource()
	if api == nil {
		return fmt.Errorf("api_config_source: only the identity agent's source (envoy_grpc cluster %q) is %w", SDSCluster, ErrUnsupported)
	}
	if err := onlyFields(api, "api_type", "grpc_services", "transport_api_version", "set_node_on_first_message_only"); err != nil {
		return fmt.Errorf("api_config_source.%w", err)
	}
	if api.GetApiType() != corev3.ApiConfigSource_GRPC {
		return fmt.Errorf("api_config_source.api_type %s: only GRPC (the identity agent) is %w", api.GetApiType(), ErrUnsupported)
	}
	gs := api.GetGrpcServices()
	if len(gs) != 1 {
		return fmt.Errorf("api_config_source.grpc_services: want exactly one, the envoy_grpc cluster %q", SDSCluster)
	}
	if err := onlyFields(gs[0], "envoy_grpc", "timeout"); err != nil {
		return fmt.Errorf("api_config_source.grpc_services[0].%w", err)
	}
	if c := gs[0].GetEnvoyGrpc().GetClusterName(); c != SDSCluster {
		return fmt.Errorf("api_config_source.grpc_services[0].envoy_grpc.cluster_name %q: only %q (the identity agent) is %w", c, SDSCluster, ErrUnsupported)
	}
	return nil
}

// sdsCertificates returns a GetCertificate-style lookup over the named secrets: the first one the
// source holds.
func sdsCertificates(src SecretSource, names []string) func() (*tls.Certificate, error) {
	return func() (*tls.Certificate, error) {
		var err error
		for _, n := range names {
			var c *tls.Certificate
			if c, err = src.Certificate(n); err == nil {
				return c, nil
			}
		}
		return nil, err
	}
}
