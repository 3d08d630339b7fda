package proxyconfig

import (
	"maps"
	"slices"
	"strconv"
	"strings"

	"istio.io/api/annotation"
)

// Field is one effective setting as `trellis proxy-config explain` prints it.
type Field struct {
	// Name is how a user sets it: the annotation (read on pods and ProxyConfigs alike), or the
	// proxy.istio.io/config / MeshConfig defaultConfig field where Istio has no annotation.
	Name  string
	Value string
	From  Origin
	// Restart: a change takes effect only when the pod is re-created, because injection writes
	// the value into the pod spec (container resources, proxy flags, init container
	// arguments, environment). Every field needs it today; see Note for live overrides.
	Restart bool
	// Note says how the running proxy can be changed without a restart, where it can.
	Note string
}

// Field names that are not annotations.
const (
	FieldConcurrency     = "concurrency"
	FieldHoldApplication = "holdApplicationUntilProxyStarts"
	FieldDrainDuration   = "terminationDrainDuration"
	FieldImageType       = "image.imageType"
	FieldDNSCapture      = "proxyMetadata[" + dnsCaptureKey + "]"
)

// liveLogLevel: trellis-proxy's admin API (like Envoy's) changes log levels at run time, but
// the change is not kept; the next start reads the injected flags again.
const liveLogLevel = "live until restart: POST localhost:15000/logging?level=LEVEL (not kept)"

// Fields lists every effective setting in a fixed order (resources, proxy, stats,
// interception, lifecycle, image, then one row per environment variable by name).
func (e *Effective) Fields() []Field {
	var out []Field
	add := func(name, value string, from Origin, note string) {
		out = append(out, Field{Name: name, Value: value, From: from, Restart: true, Note: note})
	}
	str := func(name string, v Value[string]) { add(name, v.V, v.From, "") }
	str(annotation.SidecarProxyCPU.Name, e.ProxyCPU)
	str(annotation.SidecarProxyCPULimit.Name, e.ProxyCPULimit)
	str(annotation.SidecarProxyMemory.Name, e.ProxyMemory)
	str(annotation.SidecarProxyMemoryLimit.Name, e.ProxyMemoryLimit)
	str(AnnotationInitCPU, e.InitCPU)
	str(AnnotationInitCPULimit, e.InitCPULimit)
	str(AnnotationInitMemory, e.InitMemory)
	str(AnnotationInitMemoryLimit, e.InitMemoryLimit)
	add(FieldConcurrency, concurrencyString(e.Concurrency.V), e.Concurrency.From, "")
	add(annotation.SidecarLogLevel.Name, e.LogLevel.V, e.LogLevel.From, liveLogLevel)
	add(annotation.SidecarComponentLogLevel.Name, e.ComponentLogLevel.V, e.ComponentLogLevel.From, liveLogLevel)
	add(annotation.SidecarStatsInclusionPrefixes.Name, strings.Join(e.StatsInclusionPrefixes.V, ","), e.StatsInclusionPrefixes.From, "")
	add(annotation.SidecarStatsInclusionRegexps.Name, strings.Join(e.StatsInclusionRegexps.V, ","), e.StatsInclusionRegexps.From, "")
	str(annotation.SidecarTrafficIncludeInboundPorts.Name, e.IncludeInboundPorts)
	str(annotation.SidecarTrafficExcludeInboundPorts.Name, e.ExcludeInboundPorts)
	str(annotation.SidecarTrafficIncludeOutboundIPRanges.Name, e.IncludeOutboundIPRanges)
	str(annotation.SidecarTrafficExcludeOutboundIPRanges.Name, e.ExcludeOutboundIPRanges)
	str(annotation.SidecarTrafficIncludeOutboundPorts.Name, e.IncludeOutboundPorts)
	str(annotation.SidecarTrafficExcludeOutboundPorts.Name, e.ExcludeOutboundPorts)
	add(FieldDNSCapture, strconv.FormatBool(e.DNSCapture.V), e.DNSCapture.From, "")
	add(FieldHoldApplication, strconv.FormatBool(e.HoldApplicationUntilProxyStarts.V), e.HoldApplicationUntilProxyStarts.From, "")
	add(FieldDrainDuration, e.TerminationDrainDuration.V.String(), e.TerminationDrainDuration.From, "")
	str(annotation.SidecarProxyImage.Name, e.Image)
	for _, k := range slices.Sorted(maps.Keys(e.EnvironmentVariables.V)) {
		from := e.EnvironmentVariables.From
		if o, ok := e.envFrom[k]; ok {
			from = o
		}
		add("environmentVariables["+k+"]", e.EnvironmentVariables.V[k], from, "")
	}
	return out
}

// EnvOrigin is where environment variable key got its value: the map merges over the levels,
// so each key has its own setter (EnvironmentVariables.From names the strongest level that
// contributed any).
func (e *Effective) EnvOrigin(key string) (Origin, bool) {
	o, ok := e.envFrom[key]
	return o, ok
}

func concurrencyString(n int) string {
	if n == 0 {
		return "0 (all cores)"
	}
	return strconv.Itoa(n)
}

var levelNames = [...]string{
	LevelDefault:         "default",
	LevelMeshConfig:      "MeshConfig",
	LevelMeshProxyConfig: "mesh",
	LevelNamespace:       "namespace",
	LevelWorkload:        "workload",
	LevelPod:             "pod",
}

// String is the level as explain prints it: default, MeshConfig, mesh (a root-namespace
// ProxyConfig), namespace, workload or pod.
func (l Level) String() string {
	if l < 0 || int(l) >= len(levelNames) {
		return "Level(" + strconv.Itoa(int(l)) + ")"
	}
	return levelNames[l]
}
