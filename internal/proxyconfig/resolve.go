package proxyconfig

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"istio.io/api/annotation"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	"k8s.io/apimachinery/pkg/api/resource"
	"sigs.k8s.io/yaml"
)

// Annotations for what Istio has no annotation for: the init container's resources. Everything
// else uses Istio's own annotation names.
const (
	AnnotationInitCPU         = "sidecar.trellis.dev/initCPU"
	AnnotationInitCPULimit    = "sidecar.trellis.dev/initCPULimit"
	AnnotationInitMemory      = "sidecar.trellis.dev/initMemory"
	AnnotationInitMemoryLimit = "sidecar.trellis.dev/initMemoryLimit"
)

// dnsCaptureKey is the proxyMetadata entry that turns Istio's DNS proxying on.
const dnsCaptureKey = "ISTIO_META_DNS_CAPTURE"

const defaultRootNamespace = "istio-system"

// FieldError is a value the hierarchy cannot use: which resource, which field, and why.
type FieldError struct {
	Resource string // "Pod shop/reviews-7d9", "ProxyConfig shop/tuning", "MeshConfig"
	Field    string // "metadata.annotations[sidecar.istio.io/proxyCPU]", "spec.concurrency"
	Value    string
	Reason   string
}

func (e *FieldError) Error() string {
	return fmt.Sprintf("%s: %s: %q: %s", e.Resource, e.Field, e.Value, e.Reason)
}

// Defaults are Trellis's built-in values: Istio's injection defaults, except that the
// application is held until its proxy is ready (Istio: off), since apps racing their proxy at
// start-up is the failure this exists to remove. Concurrency is left 0 here and derived from
// the CPU limit by Resolve.
func Defaults() *Effective {
	def := func(s string) Value[string] {
		return Value[string]{V: s, From: Origin{LevelDefault, "Trellis default"}}
	}
	return &Effective{
		ProxyCPU: def("100m"), ProxyCPULimit: def("2000m"), ProxyMemory: def("128Mi"), ProxyMemoryLimit: def("1024Mi"),
		InitCPU: def("10m"), InitCPULimit: def("2000m"), InitMemory: def("10Mi"), InitMemoryLimit: def("1024Mi"),
		LogLevel: def("warning"), ComponentLogLevel: def("misc:error"),
		StatsInclusionPrefixes:          Value[[]string]{From: Origin{LevelDefault, "Trellis default"}},
		StatsInclusionRegexps:           Value[[]string]{From: Origin{LevelDefault, "Trellis default"}},
		IncludeInboundPorts:             def("*"),
		ExcludeInboundPorts:             def(""),
		IncludeOutboundIPRanges:         def("*"),
		ExcludeOutboundIPRanges:         def(""),
		IncludeOutboundPorts:            def(""),
		ExcludeOutboundPorts:            def(""),
		DNSCapture:                      Value[bool]{From: Origin{LevelDefault, "Trellis default"}},
		HoldApplicationUntilProxyStarts: Value[bool]{V: true, From: Origin{LevelDefault, "Trellis default (Istio: false)"}},
		TerminationDrainDuration:        Value[time.Duration]{V: 5 * time.Second, From: Origin{LevelDefault, "Trellis default"}},
		Image:                           def(""),
		EnvironmentVariables:            Value[map[string]string]{From: Origin{LevelDefault, "Trellis default"}},
		Concurrency:                     Value[int]{From: Origin{LevelDefault, "Trellis default"}},
	}
}

// Resolve computes the effective settings of in.Pod. Several ProxyConfigs at one level are
// resolved oldest first (then by namespace/name) and reported as Conflicts. Every unusable
// value is reported (errors.Join of *FieldError); the result is nil then, so a caller never
// injects half a configuration.
func Resolve(in Input) (*Effective, []Conflict, error) {
	e := Defaults()
	r := resolver{e: e}
	concurrencySet := false
	if mc := in.Mesh.GetDefaultConfig(); mc != nil {
		concurrencySet = r.applyMeshProxyConfig(mc, Origin{LevelMeshConfig, "MeshConfig defaultConfig"}, "MeshConfig", "defaultConfig")
	}
	var conflicts []Conflict
	for _, level := range []Level{LevelMeshProxyConfig, LevelNamespace, LevelWorkload} {
		chosen, c := pick(level, candidates(in, level))
		if c != nil {
			conflicts = append(conflicts, *c)
		}
		if chosen != nil && r.applyResource(chosen, level) {
			concurrencySet = true
		}
	}
	if in.Pod != nil {
		res := "Pod " + in.Pod.Namespace + "/" + in.Pod.Name
		if r.applyAnnotations(in.Pod.Annotations, LevelPod, res) {
			concurrencySet = true
		}
	}
	if !concurrencySet {
		r.deriveConcurrency()
	}
	if len(r.errs) > 0 {
		return nil, conflicts, errors.Join(r.errs...)
	}
	return e, conflicts, nil
}

// candidates are the ProxyConfigs that apply to the pod at level. Istio: a ProxyConfig without
// selector in the root namespace is mesh-wide; without selector elsewhere it covers its
// namespace; a selector matches pods of its own namespace only.
func candidates(in Input, level Level) []*Resource {
	root := cmp.Or(in.RootNamespace, in.Mesh.GetRootNamespace(), defaultRootNamespace)
	podNS := ""
	var podLabels map[string]string
	if in.Pod != nil {
		podNS, podLabels = in.Pod.Namespace, in.Pod.Labels
	}
	var out []*Resource
	for _, pc := range in.ProxyConfigs {
		sel := pc.Spec.GetSelector().GetMatchLabels()
		var ok bool
		switch level {
		case LevelMeshProxyConfig:
			ok = pc.Namespace == root && len(sel) == 0
		case LevelNamespace:
			ok = pc.Namespace == podNS && podNS != root && len(sel) == 0
		case LevelWorkload:
			ok = pc.Namespace == podNS && len(sel) > 0 && matches(sel, podLabels)
		}
		if ok {
			out = append(out, pc)
		}
	}
	return out
}

func matches(selector, labels map[string]string) bool {
	for k, v := range selector {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// pick chooses the oldest resource, then the first by namespace/name, as Istio does for
// conflicting configuration.
func pick(level Level, rs []*Resource) (*Resource, *Conflict) {
	if len(rs) == 0 {
		return nil, nil
	}
	sort.SliceStable(rs, func(i, j int) bool {
		if !rs[i].Created.Equal(rs[j].Created) {
			return rs[i].Created.Before(rs[j].Created)
		}
		return rs[i].Namespace+"/"+rs[i].Name < rs[j].Namespace+"/"+rs[j].Name
	})
	if len(rs) == 1 {
		return rs[0], nil
	}
	c := &Conflict{Level: level, Chosen: rs[0].Namespace + "/" + rs[0].Name}
	for _, r := range rs[1:] {
		c.Ignored = append(c.Ignored, r.Namespace+"/"+r.Name)
	}
	sort.Strings(c.Ignored)
	return rs[0], c
}

type resolver struct {
	e    *Effective
	errs []error
}

func (r *resolver) fail(resource, field, value, reason string) {
	r.errs = append(r.errs, &FieldError{Resource: resource, Field: field, Value: value, Reason: reason})
}

// applyResource applies Istio's ProxyConfig fields, then the resource's annotations, which are
// more specific. It reports whether concurrency was set.
func (r *resolver) applyResource(pc *Resource, level Level) bool {
	res := "ProxyConfig " + pc.Namespace + "/" + pc.Name
	set := false
	if c := pc.Spec.GetConcurrency(); c != nil {
		if c.GetValue() < 0 {
			r.fail(res, "spec.concurrency", strconv.Itoa(int(c.GetValue())), "must be 0 (all cores) or more")
		} else {
			r.e.Concurrency = Value[int]{V: int(c.GetValue()), From: Origin{level, res + " spec.concurrency"}}
			set = true
		}
	}
	if t := pc.Spec.GetImage().GetImageType(); t != "" {
		r.e.Image = Value[string]{V: t, From: Origin{level, res + " spec.image.imageType"}}
	}
	if env := pc.Spec.GetEnvironmentVariables(); len(env) > 0 {
		r.mergeEnv(env, Origin{level, res + " spec.environmentVariables"})
	}
	if r.applyAnnotations(pc.Annotations, level, res) {
		set = true
	}
	return set
}

func (r *resolver) mergeEnv(env map[string]string, from Origin) {
	merged := make(map[string]string, len(r.e.EnvironmentVariables.V)+len(env))
	for k, v := range r.e.EnvironmentVariables.V {
		merged[k] = v
	}
	if r.e.envFrom == nil {
		r.e.envFrom = map[string]Origin{}
	}
	for k, v := range env {
		merged[k] = v
		r.e.envFrom[k] = Origin{from.Level, from.Setter + "[" + k + "]"}
	}
	r.e.EnvironmentVariables = Value[map[string]string]{V: merged, From: from}
	if v, ok := env[dnsCaptureKey]; ok {
		r.e.DNSCapture = Value[bool]{V: v == "true", From: Origin{from.Level, from.Setter + "[" + dnsCaptureKey + "]"}}
	}
}

// applyMeshProxyConfig applies the fields of Istio's mesh ProxyConfig (MeshConfig defaultConfig
// or a proxy.istio.io/config annotation) that the hierarchy covers.
func (r *resolver) applyMeshProxyConfig(mc *meshv1alpha1.ProxyConfig, from Origin, res, path string) bool {
	at := func(f string) Origin { return Origin{from.Level, from.Setter + "." + f} }
	set := false
	if c := mc.GetConcurrency(); c != nil {
		if c.GetValue() < 0 {
			r.fail(res, path+".concurrency", strconv.Itoa(int(c.GetValue())), "must be 0 (all cores) or more")
		} else {
			r.e.Concurrency = Value[int]{V: int(c.GetValue()), From: at("concurrency")}
			set = true
		}
	}
	if d := mc.GetTerminationDrainDuration(); d != nil {
		if dur := d.AsDuration(); dur < 0 {
			r.fail(res, path+".terminationDrainDuration", dur.String(), "must not be negative")
		} else {
			r.e.TerminationDrainDuration = Value[time.Duration]{V: dur, From: at("terminationDrainDuration")}
		}
	}
	if h := mc.GetHoldApplicationUntilProxyStarts(); h != nil {
		r.e.HoldApplicationUntilProxyStarts = Value[bool]{V: h.GetValue(), From: at("holdApplicationUntilProxyStarts")}
	}
	if m := mc.GetProxyStatsMatcher(); m != nil {
		if p := m.GetInclusionPrefixes(); len(p) > 0 {
			r.e.StatsInclusionPrefixes = Value[[]string]{V: p, From: at("proxyStatsMatcher.inclusionPrefixes")}
		}
		if p := m.GetInclusionRegexps(); len(p) > 0 {
			r.e.StatsInclusionRegexps = Value[[]string]{V: p, From: at("proxyStatsMatcher.inclusionRegexps")}
		}
	}
	if t := mc.GetImage().GetImageType(); t != "" {
		r.e.Image = Value[string]{V: t, From: at("image.imageType")}
	}
	if md := mc.GetProxyMetadata(); len(md) > 0 {
		r.mergeEnv(md, at("proxyMetadata"))
	}
	return set
}

// applyAnnotations applies Istio's sidecar annotations (and Trellis's init-container ones). It
// reports whether concurrency was set (through proxy.istio.io/config).
func (r *resolver) applyAnnotations(ann map[string]string, level Level, res string) bool {
	field := func(name string) string { return "metadata.annotations[" + name + "]" }
	str := func(dst *Value[string], name string, check func(string) string) {
		v, ok := ann[name]
		if !ok {
			return
		}
		if check != nil {
			if reason := check(v); reason != "" {
				r.fail(res, field(name), v, reason)
				return
			}
		}
		*dst = Value[string]{V: v, From: Origin{level, res + " " + field(name)}}
	}
	e := r.e
	str(&e.ProxyCPU, annotation.SidecarProxyCPU.Name, checkQuantity)
	str(&e.ProxyCPULimit, annotation.SidecarProxyCPULimit.Name, checkQuantity)
	str(&e.ProxyMemory, annotation.SidecarProxyMemory.Name, checkQuantity)
	str(&e.ProxyMemoryLimit, annotation.SidecarProxyMemoryLimit.Name, checkQuantity)
	str(&e.InitCPU, AnnotationInitCPU, checkQuantity)
	str(&e.InitCPULimit, AnnotationInitCPULimit, checkQuantity)
	str(&e.InitMemory, AnnotationInitMemory, checkQuantity)
	str(&e.InitMemoryLimit, AnnotationInitMemoryLimit, checkQuantity)
	str(&e.LogLevel, annotation.SidecarLogLevel.Name, checkLogLevel)
	str(&e.ComponentLogLevel, annotation.SidecarComponentLogLevel.Name, checkComponentLogLevel)
	str(&e.IncludeInboundPorts, annotation.SidecarTrafficIncludeInboundPorts.Name, checkPorts(true))
	str(&e.ExcludeInboundPorts, annotation.SidecarTrafficExcludeInboundPorts.Name, checkPorts(false))
	str(&e.IncludeOutboundPorts, annotation.SidecarTrafficIncludeOutboundPorts.Name, checkPorts(false))
	str(&e.ExcludeOutboundPorts, annotation.SidecarTrafficExcludeOutboundPorts.Name, checkPorts(false))
	str(&e.IncludeOutboundIPRanges, annotation.SidecarTrafficIncludeOutboundIPRanges.Name, checkCIDRs(true))
	str(&e.ExcludeOutboundIPRanges, annotation.SidecarTrafficExcludeOutboundIPRanges.Name, checkCIDRs(false))
	str(&e.Image, annotation.SidecarProxyImage.Name, nil)
	list := func(dst *Value[[]string], name string) {
		if v, ok := ann[name]; ok {
			*dst = Value[[]string]{V: splitList(v), From: Origin{level, res + " " + field(name)}}
		}
	}
	list(&e.StatsInclusionPrefixes, annotation.SidecarStatsInclusionPrefixes.Name)
	list(&e.StatsInclusionRegexps, annotation.SidecarStatsInclusionRegexps.Name)

	v, ok := ann[annotation.ProxyConfig.Name]
	if !ok {
		return false
	}
	mc, err := parseMeshProxyConfig(v)
	if err != nil {
		r.fail(res, field(annotation.ProxyConfig.Name), v, err.Error())
		return false
	}
	name := field(annotation.ProxyConfig.Name)
	return r.applyMeshProxyConfig(mc, Origin{level, res + " " + name}, res, name)
}

// parseMeshProxyConfig reads proxy.istio.io/config: YAML (or JSON) of Istio's mesh ProxyConfig.
// Unknown fields are errors, so a typo is not silently ignored.
func parseMeshProxyConfig(s string) (*meshv1alpha1.ProxyConfig, error) {
	js, err := yaml.YAMLToJSON([]byte(s))
	if err != nil {
		return nil, fmt.Errorf("not YAML: %v", err)
	}
	mc := &meshv1alpha1.ProxyConfig{}
	if err := protojson.Unmarshal(js, mc); err != nil {
		return nil, fmt.Errorf("not a ProxyConfig: %v", err)
	}
	return mc, nil
}

// deriveConcurrency sets the worker count from the proxy's CPU limit, rounded up, at least 1:
// workers matched to the cores the proxy may use (Istio's injector does the same with the limit).
func (r *resolver) deriveConcurrency() {
	limit := r.e.ProxyCPULimit
	n := 1
	if q, err := resource.ParseQuantity(limit.V); err == nil && limit.V != "" {
		n = max(1, int(math.Ceil(float64(q.MilliValue())/1000)))
	}
	r.e.Concurrency = Value[int]{V: n, From: Origin{limit.From.Level, "proxy CPU limit " + limit.V + " rounded up, from " + limit.From.Setter}}
}

func checkQuantity(s string) string {
	q, err := resource.ParseQuantity(s)
	if err != nil {
		return "not a Kubernetes quantity (e.g. 500m, 1, 128Mi)"
	}
	if q.Sign() < 0 {
		return "must not be negative"
	}
	return ""
}

// Log levels as Envoy names them; Istio also accepts "warn".
var logLevels = map[string]bool{"trace": true, "debug": true, "info": true, "warning": true, "warn": true,
	"error": true, "critical": true, "off": true}

func checkLogLevel(s string) string {
	if !logLevels[s] {
		return "unknown log level (want trace, debug, info, warning, error, critical or off)"
	}
	return ""
}

func checkComponentLogLevel(s string) string {
	for _, part := range strings.Split(s, ",") {
		comp, lvl, ok := strings.Cut(strings.TrimSpace(part), ":")
		if !ok || comp == "" {
			return fmt.Sprintf("%q is not component:level", part)
		}
		if !logLevels[lvl] {
			return fmt.Sprintf("component %s: unknown log level %q", comp, lvl)
		}
	}
	return ""
}

func checkPorts(starOK bool) func(string) string {
	return func(s string) string {
		if strings.TrimSpace(s) == "*" {
			if starOK {
				return ""
			}
			return `"*" is not allowed here`
		}
		for _, p := range splitList(s) {
			n, err := strconv.Atoi(p)
			if err != nil || n < 1 || n > 65535 {
				return fmt.Sprintf("%q is not a port (1-65535)", p)
			}
		}
		return ""
	}
}

func checkCIDRs(starOK bool) func(string) string {
	return func(s string) string {
		if strings.TrimSpace(s) == "*" {
			if starOK {
				return ""
			}
			return `"*" is not allowed here`
		}
		for _, c := range splitList(s) {
			if _, err := netip.ParsePrefix(c); err != nil {
				return fmt.Sprintf("%q is not a CIDR (e.g. 10.0.0.0/8)", c)
			}
		}
		return ""
	}
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
