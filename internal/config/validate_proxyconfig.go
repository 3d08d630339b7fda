package config

import (
	networkingv1beta1 "istio.io/api/networking/v1beta1"

	"github.com/trellis-mesh/trellis/internal/model"
	"github.com/trellis-mesh/trellis/internal/proxyconfig"
)

const (
	proxyConfigKind = "ProxyConfig"
	// proxyConfigVersion is the only version Istio serves ProxyConfig at.
	proxyConfigVersion = "v1beta1"
)

// validateProxyConfig applies internal/proxyconfig's checks (the annotation vocabulary read on
// ProxyConfigs, spec.concurrency, spec.selector), so a ProxyConfig that loads never makes
// injection fail later.
func validateProxyConfig(c *checker, meta model.Meta, spec *networkingv1beta1.ProxyConfig) {
	for _, fe := range proxyconfig.Validate(resourceOf(meta, spec)) {
		c.errorf(fe.Field, "%q: %s", fe.Value, fe.Reason)
	}
}

func resourceOf(meta model.Meta, spec *networkingv1beta1.ProxyConfig) *proxyconfig.Resource {
	// A file has no creation time: ProxyConfigs competing at one level are ordered by name.
	return &proxyconfig.Resource{Name: meta.Name, Namespace: meta.Namespace, Annotations: meta.Annotations, Spec: spec}
}

// ProxyConfigResources are cfg's ProxyConfigs as proxyconfig.Resolve takes them.
func ProxyConfigResources(cfg *model.Config) []*proxyconfig.Resource {
	if cfg == nil {
		return nil
	}
	out := make([]*proxyconfig.Resource, len(cfg.ProxyConfigs))
	for i, pc := range cfg.ProxyConfigs {
		out[i] = resourceOf(pc.Meta, pc.Spec)
	}
	return out
}

// ParseProxyConfigs reads the ProxyConfigs of one YAML file (named file in errors), validated
// as LoadDir validates them; documents of other kinds are an error, so a file meant to be a
// proposed ProxyConfig change holds nothing else.
func ParseProxyConfigs(file string, data []byte) ([]*proxyconfig.Resource, error) {
	p := parseFile(file, data)
	errs := p.errs
	var out []*proxyconfig.Resource
	for _, d := range p.docs {
		spec, ok := d.spec.(*networkingv1beta1.ProxyConfig)
		if !ok {
			errs = append(errs, d.errorAt("kind", d.lineOf("kind"), "want only ProxyConfig resources here"))
			continue
		}
		out = append(out, resourceOf(d.meta, spec))
	}
	for _, w := range p.warns {
		errs = append(errs, &ValidationError{Source: w.Source, Reason: w.Message + "; want only ProxyConfig resources here"})
	}
	errs = append(errs, crossCheck(p.docs)...)
	if err := joinErrors(errs); err != nil {
		return nil, err
	}
	return out, nil
}
