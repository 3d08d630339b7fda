package proxyconfig

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	"istio.io/api/annotation"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	networkingv1beta1 "istio.io/api/networking/v1beta1"
	typev1beta1 "istio.io/api/type/v1beta1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The world of these tests: pod shop/web-1 (app=web), a mesh-wide ProxyConfig in the root
// namespace, one for namespace shop and one selecting app=web.
const (
	rootNS = "istio-system"
	podNS  = "shop"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func testPod(ann map[string]string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web-1", Namespace: podNS,
		Labels: map[string]string{"app": "web"}, Annotations: ann}}
}

func pcRes(ns, name string, created time.Time, selector map[string]string) *Resource {
	spec := &networkingv1beta1.ProxyConfig{}
	if selector != nil {
		spec.Selector = &typev1beta1.WorkloadSelector{MatchLabels: selector}
	}
	return &Resource{Name: name, Namespace: ns, Created: created, Annotations: map[string]string{}, Spec: spec}
}

// world is one Input with a resource per level, filled in by a test.
type world struct {
	mesh     *meshv1alpha1.ProxyConfig
	meshPC   *Resource
	nsPC     *Resource
	workPC   *Resource
	podAnn   map[string]string
	resource map[Level]string // the setter's resource name, as Origin names it
}

func newWorld() *world {
	return &world{
		mesh:   &meshv1alpha1.ProxyConfig{},
		meshPC: pcRes(rootNS, "mesh-defaults", t0, nil),
		nsPC:   pcRes(podNS, "ns-defaults", t0, nil),
		workPC: pcRes(podNS, "web-tuning", t0, map[string]string{"app": "web"}),
		podAnn: map[string]string{},
		resource: map[Level]string{
			LevelMeshConfig:      "MeshConfig defaultConfig",
			LevelMeshProxyConfig: "ProxyConfig istio-system/mesh-defaults",
			LevelNamespace:       "ProxyConfig shop/ns-defaults",
			LevelWorkload:        "ProxyConfig shop/web-tuning",
			LevelPod:             "Pod shop/web-1",
		},
	}
}

func (w *world) input() Input {
	return Input{
		Mesh:          &meshv1alpha1.MeshConfig{RootNamespace: rootNS, DefaultConfig: w.mesh},
		Namespace:     &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: podNS}},
		Pod:           testPod(w.podAnn),
		ProxyConfigs:  []*Resource{w.meshPC, w.nsPC, w.workPC},
		RootNamespace: "",
	}
}

func (w *world) resourceAt(l Level) *Resource {
	switch l {
	case LevelMeshProxyConfig:
		return w.meshPC
	case LevelNamespace:
		return w.nsPC
	case LevelWorkload:
		return w.workPC
	}
	return nil
}

func field(t *testing.T, e *Effective, name string) Field {
	t.Helper()
	for _, f := range e.Fields() {
		if f.Name == name {
			return f
		}
	}
	t.Fatalf("no field %q in Fields()", name)
	return Field{}
}

// category is one setting and every way a level can set it.
type category struct {
	field string // Fields() name
	// How each kind of level sets value v; nil: that way does not exist. A ProxyConfig uses
	// spec, else annot, else pcfg; a pod annot, else pcfg.
	annot string
	pcfg  func(v string) string // proxy.istio.io/config YAML
	spec  func(s *networkingv1beta1.ProxyConfig, v string)
	mesh  func(m *meshv1alpha1.ProxyConfig, v string)
	// setter fragment Origin must name, per way
	specHas, pcfgHas, meshHas string
	values                    map[Level]string // what each level sets
	show                      func(v string) string
}

func quantityCategory(annot string) category {
	return category{field: annot, annot: annot, values: map[Level]string{
		LevelMeshProxyConfig: "210m", LevelNamespace: "320m", LevelWorkload: "430m", LevelPod: "540m"}}
}

func categories() []category {
	pcfg := func(key string) func(string) string {
		return func(v string) string { return key + ": " + v }
	}
	cats := []category{}
	for _, a := range []string{annotation.SidecarProxyCPU.Name, annotation.SidecarProxyCPULimit.Name,
		annotation.SidecarProxyMemory.Name, annotation.SidecarProxyMemoryLimit.Name,
		AnnotationInitCPU, AnnotationInitCPULimit, AnnotationInitMemory, AnnotationInitMemoryLimit} {
		cats = append(cats, quantityCategory(a))
	}
	five := func(a, b, c, d, e string) map[Level]string {
		return map[Level]string{LevelMeshConfig: a, LevelMeshProxyConfig: b, LevelNamespace: c, LevelWorkload: d, LevelPod: e}
	}
	four := func(b, c, d, e string) map[Level]string {
		return map[Level]string{LevelMeshProxyConfig: b, LevelNamespace: c, LevelWorkload: d, LevelPod: e}
	}
	cats = append(cats,
		category{field: FieldConcurrency, pcfg: pcfg("concurrency"), pcfgHas: "proxy.istio.io/config].concurrency",
			spec:    func(s *networkingv1beta1.ProxyConfig, v string) { s.Concurrency = wrapperspb.Int32(int32(atoi(v))) },
			specHas: "spec.concurrency",
			mesh:    func(m *meshv1alpha1.ProxyConfig, v string) { m.Concurrency = wrapperspb.Int32(int32(atoi(v))) },
			meshHas: "defaultConfig.concurrency", values: five("3", "4", "5", "6", "7")},
		// The same through proxy.istio.io/config on the ProxyConfigs.
		category{field: FieldConcurrency, pcfg: pcfg("concurrency"), pcfgHas: "proxy.istio.io/config].concurrency",
			values: four("4", "5", "6", "0"), show: func(v string) string { return concurrencyString(atoi(v)) }},
		category{field: annotation.SidecarLogLevel.Name, annot: annotation.SidecarLogLevel.Name, values: four("debug", "info", "error", "trace")},
		category{field: annotation.SidecarComponentLogLevel.Name, annot: annotation.SidecarComponentLogLevel.Name,
			values: four("upstream:debug", "http:info,misc:off", "conn_handler:warning", "misc:trace")},
		category{field: annotation.SidecarStatsInclusionPrefixes.Name, annot: annotation.SidecarStatsInclusionPrefixes.Name,
			mesh: func(m *meshv1alpha1.ProxyConfig, v string) {
				m.ProxyStatsMatcher = &meshv1alpha1.ProxyConfig_ProxyStatsMatcher{InclusionPrefixes: strings.Split(v, ",")}
			},
			meshHas: "proxyStatsMatcher.inclusionPrefixes", values: five("cluster.a", "cluster.b,http.b", "cluster.c", "listener.d", "http.e")},
		category{field: annotation.SidecarStatsInclusionRegexps.Name, annot: annotation.SidecarStatsInclusionRegexps.Name,
			mesh: func(m *meshv1alpha1.ProxyConfig, v string) {
				m.ProxyStatsMatcher = &meshv1alpha1.ProxyConfig_ProxyStatsMatcher{InclusionRegexps: strings.Split(v, ",")}
			},
			meshHas: "proxyStatsMatcher.inclusionRegexps", values: five(".*a", ".*b", ".*c", ".*d,x.*", ".*e")},
		category{field: annotation.SidecarTrafficIncludeInboundPorts.Name, annot: annotation.SidecarTrafficIncludeInboundPorts.Name, values: four("80", "81,82", "*", "9080")},
		category{field: annotation.SidecarTrafficExcludeInboundPorts.Name, annot: annotation.SidecarTrafficExcludeInboundPorts.Name, values: four("80", "81,82", "83", "9080")},
		category{field: annotation.SidecarTrafficIncludeOutboundIPRanges.Name, annot: annotation.SidecarTrafficIncludeOutboundIPRanges.Name,
			values: four("10.0.0.0/8", "10.1.0.0/16,10.2.0.0/16", "*", "fd00::/8")},
		category{field: annotation.SidecarTrafficExcludeOutboundIPRanges.Name, annot: annotation.SidecarTrafficExcludeOutboundIPRanges.Name,
			values: four("10.0.0.0/8", "10.1.0.0/16", "192.168.0.1/32", "fd00::/8")},
		category{field: annotation.SidecarTrafficIncludeOutboundPorts.Name, annot: annotation.SidecarTrafficIncludeOutboundPorts.Name, values: four("443", "8443", "5432,6379", "1")},
		category{field: annotation.SidecarTrafficExcludeOutboundPorts.Name, annot: annotation.SidecarTrafficExcludeOutboundPorts.Name, values: four("443", "8443", "5432,6379", "65535")},
		category{field: FieldDNSCapture,
			pcfg:    func(v string) string { return "proxyMetadata: {ISTIO_META_DNS_CAPTURE: \"" + v + "\"}" },
			pcfgHas: "proxy.istio.io/config].proxyMetadata[ISTIO_META_DNS_CAPTURE]",
			spec: func(s *networkingv1beta1.ProxyConfig, v string) {
				s.EnvironmentVariables = map[string]string{"ISTIO_META_DNS_CAPTURE": v}
			},
			specHas: "spec.environmentVariables[ISTIO_META_DNS_CAPTURE]",
			mesh: func(m *meshv1alpha1.ProxyConfig, v string) {
				m.ProxyMetadata = map[string]string{"ISTIO_META_DNS_CAPTURE": v}
			},
			meshHas: "defaultConfig.proxyMetadata[ISTIO_META_DNS_CAPTURE]", values: five("true", "false", "true", "false", "true")},
		category{field: FieldHoldApplication, pcfg: pcfg("holdApplicationUntilProxyStarts"), pcfgHas: "proxy.istio.io/config].holdApplicationUntilProxyStarts",
			mesh: func(m *meshv1alpha1.ProxyConfig, v string) {
				m.HoldApplicationUntilProxyStarts = wrapperspb.Bool(v == "true")
			},
			meshHas: "defaultConfig.holdApplicationUntilProxyStarts", values: five("false", "true", "false", "true", "false")},
		category{field: FieldDrainDuration, pcfg: pcfg("terminationDrainDuration"), pcfgHas: "proxy.istio.io/config].terminationDrainDuration",
			mesh: func(m *meshv1alpha1.ProxyConfig, v string) {
				d, _ := time.ParseDuration(v)
				m.TerminationDrainDuration = durationpb.New(d)
			},
			meshHas: "defaultConfig.terminationDrainDuration", values: five("6s", "7s", "8s", "90s", "0s"),
			show: func(v string) string { d, _ := time.ParseDuration(v); return d.String() }},
		category{field: annotation.SidecarProxyImage.Name, annot: annotation.SidecarProxyImage.Name,
			spec: func(s *networkingv1beta1.ProxyConfig, v string) {
				s.Image = &networkingv1beta1.ProxyImage{ImageType: v}
			},
			specHas: "spec.image.imageType",
			mesh:    func(m *meshv1alpha1.ProxyConfig, v string) { m.Image = &networkingv1beta1.ProxyImage{ImageType: v} },
			meshHas: "defaultConfig.image.imageType", values: five("distroless", "debug", "default", "distroless", "registry.example/proxy:1.2")},
		category{field: "environmentVariables[FOO]",
			pcfg:    func(v string) string { return "proxyMetadata: {FOO: " + v + "}" },
			pcfgHas: "proxy.istio.io/config].proxyMetadata[FOO]",
			spec:    func(s *networkingv1beta1.ProxyConfig, v string) { s.EnvironmentVariables = map[string]string{"FOO": v} },
			specHas: "spec.environmentVariables[FOO]",
			mesh:    func(m *meshv1alpha1.ProxyConfig, v string) { m.ProxyMetadata = map[string]string{"FOO": v} },
			meshHas: "defaultConfig.proxyMetadata[FOO]", values: five("mesh", "root", "ns", "workload", "pod")},
	)
	return cats
}

func atoi(s string) int {
	var n int
	fmt.Sscan(s, &n)
	return n
}

// set makes level l of w set c to v, returning the fragment its Origin must name.
func (c category) set(w *world, l Level, v string) (string, bool) {
	switch l {
	case LevelMeshConfig:
		if c.mesh == nil {
			return "", false
		}
		c.mesh(w.mesh, v)
		return c.meshHas, true
	case LevelPod:
		if c.annot != "" {
			w.podAnn[c.annot] = v
			return "metadata.annotations[" + c.annot + "]", true
		}
		w.podAnn[annotation.ProxyConfig.Name] = c.pcfg(v)
		return c.pcfgHas, true
	}
	r := w.resourceAt(l)
	switch {
	case c.spec != nil:
		c.spec(r.Spec, v)
		return c.specHas, true
	case c.annot != "":
		r.Annotations[c.annot] = v
		return "metadata.annotations[" + c.annot + "]", true
	default:
		r.Annotations[annotation.ProxyConfig.Name] = c.pcfg(v)
		return c.pcfgHas, true
	}
}

// TestPrecedenceMatrix: for every setting and every level that can set it, with that level
// and all weaker ones set, that level wins (so it beats the weaker ones, and loses to each
// stronger one in the stronger one's row); Origin names the level and the exact setter.
func TestPrecedenceMatrix(t *testing.T) {
	for _, c := range categories() {
		for top := LevelMeshConfig; top <= LevelPod; top++ {
			if _, ok := c.values[top]; !ok {
				continue
			}
			t.Run(fmt.Sprintf("%s/%s", c.field, top), func(t *testing.T) {
				w := newWorld()
				var want, wantSetter string
				set := 0
				for l := LevelMeshConfig; l <= top; l++ {
					v, ok := c.values[l]
					if !ok {
						continue
					}
					has, ok := c.set(w, l, v)
					if !ok {
						continue
					}
					want, wantSetter, set = v, has, set+1
				}
				if wantSetter == "" {
					t.Skipf("level %s cannot set %s", top, c.field)
				}
				e, _, err := Resolve(w.input())
				if err != nil {
					t.Fatalf("Resolve: %v", err)
				}
				f := field(t, e, c.field)
				if c.show != nil {
					want = c.show(want)
				}
				if f.Value != want {
					t.Errorf("value = %q, want %q (level %s over %d levels set)", f.Value, want, top, set)
				}
				if f.From.Level != top {
					t.Errorf("origin level = %s, want %s (setter %q)", f.From.Level, top, f.From.Setter)
				}
				if !strings.Contains(f.From.Setter, w.resource[top]) || !strings.Contains(f.From.Setter, wantSetter) {
					t.Errorf("origin setter = %q, want it to name %q and %q", f.From.Setter, w.resource[top], wantSetter)
				}
				if !f.Restart {
					t.Errorf("%s: Restart = false; every hierarchy value is written into the pod spec", c.field)
				}
			})
		}
	}
}

func TestDefaults(t *testing.T) {
	e, conflicts, err := Resolve(Input{Pod: testPod(nil)})
	if err != nil || len(conflicts) > 0 {
		t.Fatalf("Resolve: %v %v", err, conflicts)
	}
	want := map[string]string{
		annotation.SidecarProxyCPU.Name: "100m", annotation.SidecarProxyCPULimit.Name: "2000m",
		annotation.SidecarProxyMemory.Name: "128Mi", annotation.SidecarProxyMemoryLimit.Name: "1024Mi",
		FieldConcurrency: "2", annotation.SidecarLogLevel.Name: "warning",
		annotation.SidecarTrafficIncludeInboundPorts.Name: "*", annotation.SidecarTrafficIncludeOutboundIPRanges.Name: "*",
		FieldDNSCapture: "false", FieldHoldApplication: "true", FieldDrainDuration: "5s",
	}
	for name, v := range want {
		f := field(t, e, name)
		if f.Value != v || f.From.Level != LevelDefault {
			t.Errorf("%s = %q from %v, want default %q", name, f.Value, f.From, v)
		}
	}
	if s := field(t, e, FieldHoldApplication).From.Setter; !strings.Contains(s, "Istio: false") {
		t.Errorf("hold default setter %q should say Istio's default differs", s)
	}
}

// TestConcurrencyFromCPULimit: without an explicit concurrency, the proxy runs one worker per
// core of its CPU limit, rounded up, at least one; an explicit 0 (all cores) is kept.
func TestConcurrencyFromCPULimit(t *testing.T) {
	for _, tc := range []struct {
		name        string
		limit       string // pod's sidecar.istio.io/proxyCPULimit; "" = default 2000m
		explicit    string // workload ProxyConfig spec.concurrency; "" = unset
		want        int
		wantLevel   Level
		wantSetters []string
	}{
		{"default limit 2000m", "", "", 2, LevelDefault, []string{"2000m rounded up", "Trellis default"}},
		{"1500m rounds up", "1500m", "", 2, LevelPod, []string{"1500m rounded up", "Pod shop/web-1"}},
		{"200m is one worker", "200m", "", 1, LevelPod, []string{"200m"}},
		{"whole cores", "3", "", 3, LevelPod, []string{"limit 3 "}},
		{"2001m", "2001m", "", 3, LevelPod, nil},
		{"explicit 0 kept as all cores", "1500m", "0", 0, LevelWorkload, []string{"spec.concurrency"}},
		{"explicit beats derived", "200m", "4", 4, LevelWorkload, []string{"spec.concurrency"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld()
			if tc.limit != "" {
				w.podAnn[annotation.SidecarProxyCPULimit.Name] = tc.limit
			}
			if tc.explicit != "" {
				w.workPC.Spec.Concurrency = wrapperspb.Int32(int32(atoi(tc.explicit)))
			}
			e, _, err := Resolve(w.input())
			if err != nil {
				t.Fatal(err)
			}
			if e.Concurrency.V != tc.want || e.Concurrency.From.Level != tc.wantLevel {
				t.Errorf("concurrency = %d from %v, want %d from level %s", e.Concurrency.V, e.Concurrency.From, tc.want, tc.wantLevel)
			}
			for _, s := range tc.wantSetters {
				if !strings.Contains(e.Concurrency.From.Setter, s) {
					t.Errorf("setter %q does not say %q", e.Concurrency.From.Setter, s)
				}
			}
		})
	}
}

// TestPlacement: which ProxyConfigs reach a pod, and at which level.
func TestPlacement(t *testing.T) {
	la := annotation.SidecarLogLevel.Name
	mk := func(ns, name string, sel map[string]string) *Resource {
		r := pcRes(ns, name, t0, sel)
		r.Annotations[la] = "debug"
		return r
	}
	for _, tc := range []struct {
		name      string
		root      string // Input.RootNamespace
		meshRoot  string // MeshConfig rootNamespace
		pod       *corev1.Pod
		pc        *Resource
		wantLevel Level // LevelDefault: it does not apply
	}{
		{"root namespace, no selector: mesh-wide", "", "", testPod(nil), mk(rootNS, "p", nil), LevelMeshProxyConfig},
		{"pod's namespace, no selector", "", "", testPod(nil), mk(podNS, "p", nil), LevelNamespace},
		{"other namespace, no selector", "", "", testPod(nil), mk("other", "p", nil), LevelDefault},
		{"selector matching, own namespace", "", "", testPod(nil), mk(podNS, "p", map[string]string{"app": "web"}), LevelWorkload},
		{"selector matching labels in another namespace", "", "", testPod(nil), mk("other", "p", map[string]string{"app": "web"}), LevelDefault},
		{"selector in the root namespace does not reach other namespaces", "", "", testPod(nil), mk(rootNS, "p", map[string]string{"app": "web"}), LevelDefault},
		{"selector not matching", "", "", testPod(nil), mk(podNS, "p", map[string]string{"app": "api"}), LevelDefault},
		{"selector needs every label", "", "", testPod(nil), mk(podNS, "p", map[string]string{"app": "web", "v": "2"}), LevelDefault},
		{"pod in the root namespace: no-selector ProxyConfig is mesh-wide", "", "",
			rootPod(), mk(rootNS, "p", nil), LevelMeshProxyConfig},
		{"pod in the root namespace: selector matches it", "", "",
			rootPod(), mk(rootNS, "p", map[string]string{"app": "gw"}), LevelWorkload},
		{"Input.RootNamespace", "mesh-root", "", testPod(nil), mk("mesh-root", "p", nil), LevelMeshProxyConfig},
		{"istio-system is not root when another is", "mesh-root", "", testPod(nil), mk(rootNS, "p", nil), LevelDefault},
		{"MeshConfig rootNamespace", "", "mesh-root", testPod(nil), mk("mesh-root", "p", nil), LevelMeshProxyConfig},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, _, err := Resolve(Input{Mesh: &meshv1alpha1.MeshConfig{RootNamespace: tc.meshRoot}, RootNamespace: tc.root,
				Pod: tc.pod, ProxyConfigs: []*Resource{tc.pc}})
			if err != nil {
				t.Fatal(err)
			}
			if got := e.LogLevel.From.Level; got != tc.wantLevel {
				t.Errorf("level = %s (%s), want %s", got, e.LogLevel.From.Setter, tc.wantLevel)
			}
		})
	}
}

func rootPod() *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "gw", Namespace: rootNS, Labels: map[string]string{"app": "gw"}}}
}

// TestConflicts: several ProxyConfigs at one level: the oldest wins, then by name; the rest are
// reported, and the levels do not mix.
func TestConflicts(t *testing.T) {
	la := annotation.SidecarLogLevel.Name
	mk := func(name string, created time.Time, level string, sel map[string]string) *Resource {
		r := pcRes(podNS, name, created, sel)
		r.Annotations[la] = level
		return r
	}
	web := map[string]string{"app": "web"}
	for _, tc := range []struct {
		name    string
		pcs     []*Resource
		want    string
		wantC   []Conflict
		wantSet string
	}{
		{"oldest wins over name order", []*Resource{mk("a", t0.Add(time.Hour), "debug", nil), mk("z", t0, "error", nil)},
			"error", []Conflict{{Level: LevelNamespace, Chosen: "shop/z", Ignored: []string{"shop/a"}}}, "shop/z"},
		{"same age: first by name", []*Resource{mk("b", t0, "debug", web), mk("a", t0, "error", web), mk("c", t0, "info", web)},
			"error", []Conflict{{Level: LevelWorkload, Chosen: "shop/a", Ignored: []string{"shop/b", "shop/c"}}}, "shop/a"},
		{"one per level is no conflict", []*Resource{mk("ns", t0, "debug", nil), mk("w", t0.Add(time.Hour), "error", web)},
			"error", nil, "shop/w"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, conflicts, err := Resolve(Input{Pod: testPod(nil), ProxyConfigs: tc.pcs})
			if err != nil {
				t.Fatal(err)
			}
			if e.LogLevel.V != tc.want || !strings.Contains(e.LogLevel.From.Setter, tc.wantSet) {
				t.Errorf("log level = %q from %q, want %q from %s", e.LogLevel.V, e.LogLevel.From.Setter, tc.want, tc.wantSet)
			}
			if fmt.Sprint(conflicts) != fmt.Sprint(tc.wantC) {
				t.Errorf("conflicts = %+v, want %+v", conflicts, tc.wantC)
			}
		})
	}
}

// TestEnvironmentMerges: environment variables merge over the levels (as Istio merges
// proxyMetadata); each key keeps its own setter.
func TestEnvironmentMerges(t *testing.T) {
	w := newWorld()
	w.mesh.ProxyMetadata = map[string]string{"A": "mesh", "B": "mesh"}
	w.nsPC.Spec.EnvironmentVariables = map[string]string{"B": "ns", "C": "ns"}
	w.podAnn[annotation.ProxyConfig.Name] = "proxyMetadata: {C: pod}"
	e, _, err := Resolve(w.input())
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string][2]string{"A": {"mesh", "MeshConfig"}, "B": {"ns", "shop/ns-defaults spec.environmentVariables[B]"}, "C": {"pod", "Pod shop/web-1"}} {
		f := field(t, e, "environmentVariables["+k+"]")
		if f.Value != want[0] || !strings.Contains(f.From.Setter, want[1]) {
			t.Errorf("%s = %q from %q, want %q from %q", k, f.Value, f.From.Setter, want[0], want[1])
		}
	}
}

// TestBadValues: every unusable value is an error naming resource, field and reason, and
// Resolve returns no settings at all.
func TestBadValues(t *testing.T) {
	pcAnn := annotation.ProxyConfig.Name
	for _, tc := range []struct {
		name       string
		apply      func(w *world)
		resource   string
		field      string
		reason     string
		wantErrors int
	}{
		{"negative terminationDrainDuration", func(w *world) { w.podAnn[pcAnn] = "terminationDrainDuration: -5s" },
			"Pod shop/web-1", "metadata.annotations[proxy.istio.io/config].terminationDrainDuration", "must not be negative", 1},
		{"negative terminationDrainDuration in MeshConfig", func(w *world) { w.mesh.TerminationDrainDuration = durationpb.New(-time.Second) },
			"MeshConfig", "defaultConfig.terminationDrainDuration", "must not be negative", 1},
		{"unknown log level", func(w *world) { w.nsPC.Annotations[annotation.SidecarLogLevel.Name] = "verbose" },
			"ProxyConfig shop/ns-defaults", "metadata.annotations[sidecar.istio.io/logLevel]", "unknown log level", 1},
		{"component log level without level", func(w *world) { w.podAnn[annotation.SidecarComponentLogLevel.Name] = "upstream" },
			"Pod shop/web-1", "metadata.annotations[sidecar.istio.io/componentLogLevel]", "not component:level", 1},
		{"malformed CIDR", func(w *world) {
			w.workPC.Annotations[annotation.SidecarTrafficExcludeOutboundIPRanges.Name] = "10.0.0.0/8,10.1.0.0"
		}, "ProxyConfig shop/web-tuning", "metadata.annotations[traffic.sidecar.istio.io/excludeOutboundIPRanges]", `"10.1.0.0" is not a CIDR`, 1},
		{"port 0", func(w *world) { w.podAnn[annotation.SidecarTrafficExcludeInboundPorts.Name] = "0" },
			"Pod shop/web-1", "metadata.annotations[traffic.sidecar.istio.io/excludeInboundPorts]", "not a port", 1},
		{"port too big", func(w *world) { w.meshPC.Annotations[annotation.SidecarTrafficIncludeOutboundPorts.Name] = "443,65536" },
			"ProxyConfig istio-system/mesh-defaults", "metadata.annotations[traffic.sidecar.istio.io/includeOutboundPorts]", `"65536" is not a port`, 1},
		{"port name", func(w *world) { w.podAnn[annotation.SidecarTrafficIncludeInboundPorts.Name] = "http" },
			"Pod shop/web-1", "metadata.annotations[traffic.sidecar.istio.io/includeInboundPorts]", "not a port", 1},
		{"* in an exclude list", func(w *world) { w.podAnn[annotation.SidecarTrafficExcludeInboundPorts.Name] = "*" },
			"Pod shop/web-1", "metadata.annotations[traffic.sidecar.istio.io/excludeInboundPorts]", "not allowed", 1},
		{"bad quantity", func(w *world) { w.podAnn[annotation.SidecarProxyCPU.Name] = "lots" },
			"Pod shop/web-1", "metadata.annotations[sidecar.istio.io/proxyCPU]", "not a Kubernetes quantity", 1},
		{"negative quantity", func(w *world) { w.nsPC.Annotations[AnnotationInitMemory] = "-10Mi" },
			"ProxyConfig shop/ns-defaults", "metadata.annotations[sidecar.trellis.dev/initMemory]", "must not be negative", 1},
		{"unknown field in proxy.istio.io/config", func(w *world) { w.podAnn[pcAnn] = "concurrancy: 2" },
			"Pod shop/web-1", "metadata.annotations[proxy.istio.io/config]", "concurrancy", 1},
		{"proxy.istio.io/config not YAML", func(w *world) { w.podAnn[pcAnn] = "concurrency: [2" },
			"Pod shop/web-1", "metadata.annotations[proxy.istio.io/config]", "not YAML", 1},
		{"negative spec.concurrency", func(w *world) { w.workPC.Spec.Concurrency = wrapperspb.Int32(-1) },
			"ProxyConfig shop/web-tuning", "spec.concurrency", "0 (all cores) or more", 1},
		{"every problem is reported", func(w *world) {
			w.podAnn[annotation.SidecarProxyCPU.Name] = "lots"
			w.nsPC.Annotations[annotation.SidecarLogLevel.Name] = "loud"
		}, "Pod shop/web-1", "metadata.annotations[sidecar.istio.io/proxyCPU]", "not a Kubernetes quantity", 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld()
			tc.apply(w)
			e, _, err := Resolve(w.input())
			if err == nil {
				t.Fatalf("Resolve accepted it: %+v", e)
			}
			if e != nil {
				t.Errorf("Resolve returned settings with an error")
			}
			var fes []*FieldError
			for _, x := range err.(interface{ Unwrap() []error }).Unwrap() {
				var fe *FieldError
				if !errors.As(x, &fe) {
					t.Fatalf("%v is not a *FieldError", x)
				}
				fes = append(fes, fe)
			}
			if len(fes) != tc.wantErrors {
				t.Errorf("%d errors, want %d: %v", len(fes), tc.wantErrors, err)
			}
			found := false
			for _, fe := range fes {
				if fe.Resource == tc.resource && fe.Field == tc.field && strings.Contains(fe.Reason, tc.reason) {
					found = true
				}
			}
			if !found {
				t.Errorf("error = %v; want %s: %s: ...%s", err, tc.resource, tc.field, tc.reason)
			}
		})
	}
}

func TestFieldsOrderAndValues(t *testing.T) {
	w := newWorld()
	w.workPC.Spec.Concurrency = wrapperspb.Int32(0)
	w.podAnn[annotation.SidecarStatsInclusionPrefixes.Name] = "cluster.outbound, http."
	e, _, err := Resolve(w.input())
	if err != nil {
		t.Fatal(err)
	}
	fs := e.Fields()
	if fs[0].Name != annotation.SidecarProxyCPU.Name {
		t.Errorf("first field %q, want the proxy's CPU request", fs[0].Name)
	}
	if got := field(t, e, FieldConcurrency).Value; got != "0 (all cores)" {
		t.Errorf("concurrency 0 shows %q", got)
	}
	if got := field(t, e, annotation.SidecarStatsInclusionPrefixes.Name).Value; got != "cluster.outbound,http." {
		t.Errorf("prefixes show %q", got)
	}
	if n := field(t, e, annotation.SidecarLogLevel.Name).Note; !strings.Contains(n, "/logging") {
		t.Errorf("log level note %q should name the live override", n)
	}
	seen := map[string]bool{}
	for _, f := range fs {
		if seen[f.Name] {
			t.Errorf("field %s listed twice", f.Name)
		}
		seen[f.Name] = true
	}
}
