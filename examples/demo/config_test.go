package demo

import (
	"bytes"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	networking "istio.io/api/networking/v1alpha3"
	"sigs.k8s.io/yaml"
)

// doc is one YAML document of a config file, with its spec decoded
// strictly into the Istio API type of its kind.
type doc struct {
	Kind, Namespace, Name string
	Spec                  proto.Message
}

var docSeparator = regexp.MustCompile(`(?m)^---[ \t]*$`)

func newSpec(kind string) proto.Message {
	switch kind {
	case "ServiceEntry":
		return &networking.ServiceEntry{}
	case "WorkloadEntry":
		return &networking.WorkloadEntry{}
	case "Sidecar":
		return &networking.Sidecar{}
	case "Gateway":
		return &networking.Gateway{}
	case "VirtualService":
		return &networking.VirtualService{}
	case "DestinationRule":
		return &networking.DestinationRule{}
	}
	return nil
}

// parseResources decodes the Istio resources of an embedded file. Unknown
// spec fields fail, so a typo cannot hide behind a YAML that merely parses.
func parseResources(t *testing.T, file string) []doc {
	t.Helper()
	data, err := Config.ReadFile("config/" + file)
	if err != nil {
		t.Fatal(err)
	}
	var out []doc
	for i, part := range docSeparator.Split(string(data), -1) {
		var obj struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Metadata   struct {
				Name, Namespace string
			} `json:"metadata"`
			Spec json.RawMessage `json:"spec"`
		}
		if err := yaml.UnmarshalStrict([]byte(part), &obj); err != nil {
			t.Fatalf("%s: document %d: %v", file, i, err)
		}
		if obj.Kind == "" && len(obj.Spec) == 0 {
			continue // comments only
		}
		if obj.APIVersion != "networking.istio.io/v1" {
			t.Errorf("%s: document %d: apiVersion %q, want networking.istio.io/v1", file, i, obj.APIVersion)
		}
		spec := newSpec(obj.Kind)
		if spec == nil {
			t.Fatalf("%s: document %d: unexpected kind %q", file, i, obj.Kind)
		}
		if err := protojson.Unmarshal(obj.Spec, spec); err != nil {
			t.Fatalf("%s: %s %s: spec: %v", file, obj.Kind, obj.Metadata.Name, err)
		}
		out = append(out, doc{obj.Kind, obj.Metadata.Namespace, obj.Metadata.Name, spec})
	}
	return out
}

func TestConfigFilesAreIstioResourcesOfExpectedKinds(t *testing.T) {
	want := map[string][]string{
		"services.yaml":          {"ServiceEntry default/productpage", "ServiceEntry default/reviews", "ServiceEntry default/ratings"},
		"workloads.yaml":         {"WorkloadEntry istio-system/istio-ingressgateway", "WorkloadEntry default/productpage-v1", "WorkloadEntry default/reviews-v1", "WorkloadEntry default/reviews-v2", "WorkloadEntry default/reviews-v3", "WorkloadEntry default/ratings-v1"},
		"sidecars.yaml":          {"Sidecar default/productpage-v1", "Sidecar default/reviews-v1", "Sidecar default/reviews-v2", "Sidecar default/reviews-v3", "Sidecar default/ratings-v1"},
		"gateway.yaml":           {"Gateway default/bookinfo-gateway", "VirtualService default/bookinfo"},
		"destination-rules.yaml": {"DestinationRule default/productpage", "DestinationRule default/reviews", "DestinationRule default/ratings"},
		"reviews.yaml":           {"VirtualService default/reviews"},
	}
	files, err := fs.Glob(Config, "config/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		name := filepath.Base(f)
		if _, ok := want[name]; !ok && name != "mesh.yaml" {
			t.Errorf("embedded %s has no expectations here", name)
		}
	}
	for file, kinds := range want {
		var got []string
		for _, d := range parseResources(t, file) {
			got = append(got, d.Kind+" "+d.Namespace+"/"+d.Name)
		}
		if !slices.Equal(got, kinds) {
			t.Errorf("%s holds %q, want %q", file, got, kinds)
		}
	}
}

func TestMeshConfigIsAPlainMeshConfigForLocalMode(t *testing.T) {
	data, err := Config.ReadFile("config/mesh.yaml")
	if err != nil {
		t.Fatal(err)
	}
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		t.Fatal(err)
	}
	var mc meshv1alpha1.MeshConfig
	if err := protojson.Unmarshal(js, &mc); err != nil {
		t.Fatalf("mesh.yaml: %v", err)
	}
	dc := mc.GetDefaultConfig()
	if mc.GetTrustDomain() != "cluster.local" || dc.GetProxyAdminPort() != 15000 ||
		dc.GetDiscoveryAddress() != "127.0.0.1:15010" || dc.GetInterceptionMode() != meshv1alpha1.ProxyConfig_NONE {
		t.Errorf("mesh.yaml = %v, want trust domain cluster.local, admin port 15000, xDS 127.0.0.1:15010, interception NONE", &mc)
	}
}

func TestReviewsRouteAllToV1AndDestinationRulesDefineSubsets(t *testing.T) {
	vs := parseResources(t, "reviews.yaml")[0].Spec.(*networking.VirtualService)
	routes := vs.GetHttp()
	if len(routes) != 1 || len(routes[0].GetRoute()) != 1 || routes[0].GetRoute()[0].GetDestination().GetSubset() != "v1" {
		t.Errorf("reviews VirtualService %v, want a single route to subset v1", vs)
	}
	subsets := map[string][]string{}
	for _, d := range parseResources(t, "destination-rules.yaml") {
		dr := d.Spec.(*networking.DestinationRule)
		for _, s := range dr.GetSubsets() {
			if s.GetLabels()["version"] != s.GetName() {
				t.Errorf("DestinationRule %s subset %s selects %v, want version: %s", d.Name, s.GetName(), s.GetLabels(), s.GetName())
			}
			subsets[dr.GetHost()] = append(subsets[dr.GetHost()], s.GetName())
		}
	}
	want := map[string][]string{"productpage": {"v1"}, "reviews": {"v1", "v2", "v3"}, "ratings": {"v1"}}
	if !reflect.DeepEqual(subsets, want) {
		t.Errorf("subsets %v, want %v", subsets, want)
	}
}

// The Go description of the demo and its YAML must agree, or proxies would
// look for workloads and apps where there are none.
func TestWorkloadsMatchWorkloadEntriesAndSidecars(t *testing.T) {
	entries := map[string]doc{}
	for _, d := range parseResources(t, "workloads.yaml") {
		entries[d.Namespace+"/"+d.Name] = d
	}
	sidecars := map[string]*networking.Sidecar{}
	for _, d := range parseResources(t, "sidecars.yaml") {
		sidecars[d.Name] = d.Spec.(*networking.Sidecar)
	}
	wls := Workloads()
	if len(wls) != len(entries) {
		t.Errorf("Workloads() has %d workloads, workloads.yaml %d", len(wls), len(entries))
	}
	listens := map[string]bool{}
	for _, w := range wls {
		d, ok := entries[w.Namespace+"/"+w.Name]
		if !ok {
			t.Errorf("%s/%s: no WorkloadEntry", w.Namespace, w.Name)
			continue
		}
		we := d.Spec.(*networking.WorkloadEntry)
		if we.GetAddress() != w.IP || !reflect.DeepEqual(we.GetLabels(), w.Labels) || we.GetServiceAccount() != w.ServiceAccount {
			t.Errorf("%s: WorkloadEntry %v, Workloads() says %s %v %s", w.Name, we, w.IP, w.Labels, w.ServiceAccount)
		}
		wantID := "sidecar~" + w.IP + "~" + w.Name + "." + w.Namespace + "~" + w.Namespace + ".svc.cluster.local"
		if w.Gateway {
			wantID = "router" + strings.TrimPrefix(wantID, "sidecar")
		}
		if w.NodeID != wantID {
			t.Errorf("%s: node ID %q, want %q", w.Name, w.NodeID, wantID)
		}
		if w.Gateway {
			if w.App != nil || w.Labels["istio"] != "ingressgateway" {
				t.Errorf("gateway %s: app %v labels %v, want no app and istio: ingressgateway", w.Name, w.App, w.Labels)
			}
			continue
		}
		if w.App == nil || w.App.ID() != w.Name || w.App.SidecarURL != "http://"+w.IP+":15001" || listens[w.App.Listen] {
			t.Errorf("%s: app %+v, want %s with sidecar http://%s:15001 on a port of its own", w.Name, w.App, w.Name, w.IP)
			continue
		}
		listens[w.App.Listen] = true
		sc := sidecars[w.Name]
		if sc == nil || !reflect.DeepEqual(sc.GetWorkloadSelector().GetLabels(), w.Labels) {
			t.Errorf("%s: Sidecar %v, want one selecting %v", w.Name, sc, w.Labels)
			continue
		}
		in := sc.GetIngress()
		if len(in) != 1 || in[0].GetPort().GetNumber() != ServicePort || in[0].GetDefaultEndpoint() != w.App.Listen {
			t.Errorf("%s: Sidecar ingress %v, want port %d to %s", w.Name, in, ServicePort, w.App.Listen)
		}
	}
}

func TestWriteConfigWritesEveryFileAndNeverOverwrites(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "demo")
	if err := WriteConfig(dir); err != nil {
		t.Fatal(err)
	}
	files, _ := fs.Glob(Config, "config/*.yaml")
	if len(files) != 7 {
		t.Errorf("embedded %d files, want 7: %v", len(files), files)
	}
	for _, f := range files {
		want, _ := Config.ReadFile(f)
		got, err := os.ReadFile(filepath.Join(dir, filepath.Base(f)))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: written copy differs from the embedded one (err %v)", f, err)
		}
	}

	edited := []byte("# my edit\n")
	reviews := filepath.Join(dir, "reviews.yaml")
	if err := os.WriteFile(reviews, edited, 0o644); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(dir, "mesh.yaml"))
	err := WriteConfig(dir)
	if !errors.Is(err, fs.ErrExist) {
		t.Fatalf("second WriteConfig = %v, want fs.ErrExist", err)
	}
	if got, _ := os.ReadFile(reviews); !bytes.Equal(got, edited) {
		t.Error("WriteConfig overwrote a user's edit")
	}
	if _, err := os.Stat(filepath.Join(dir, "mesh.yaml")); !errors.Is(err, fs.ErrNotExist) {
		t.Error("a failed WriteConfig still wrote files")
	}
}
