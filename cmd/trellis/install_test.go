package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/trellis-mesh/trellis/internal/security/ca"
	"github.com/trellis-mesh/trellis/manifests/crds"
)

// renderedDeployment runs `trellis install` and returns its Deployment.
func renderedDeployment(t *testing.T) appsv1.Deployment {
	t.Helper()
	dir := t.TempDir()
	if _, err := ca.LoadOrCreateDir(dir, ca.Options{}); err != nil {
		t.Fatal(err)
	}
	out, err := runCLI(context.Background(), "install", "--skip-crds", "--image", "example.com/trellis:test", "--ca-dir", dir)
	if err != nil {
		t.Fatalf("trellis install: %v\n%s", err, out)
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(out), 4096)
	for {
		var obj map[string]any
		if err := dec.Decode(&obj); err != nil {
			t.Fatalf("no Deployment in the output: %v", err)
		}
		if obj["kind"] != "Deployment" {
			continue
		}
		var dep appsv1.Deployment
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj, &dep); err != nil {
			t.Fatal(err)
		}
		return dep
	}
}

// TestInstalledArgsParseWithControlPlaneCommand keeps the Deployment from
// drifting from the CLI: its command line is accepted by the real
// `trellis controlplane` command's flags, required flags and flag groups,
// and the ports it listens on are the ports the container declares.
func TestInstalledArgsParseWithControlPlaneCommand(t *testing.T) {
	dep := renderedDeployment(t)
	c := dep.Spec.Template.Spec.Containers[0]
	if len(c.Command) != 1 || c.Command[0] != "trellis" {
		t.Fatalf("command %q, want [trellis]", c.Command)
	}
	root := newRootCmd()
	sub, rest, err := root.Find(c.Args)
	if err != nil || sub.Name() != "controlplane" {
		t.Fatalf("args %q do not name the controlplane command: %v", c.Args, err)
	}
	if err := sub.ParseFlags(rest); err != nil {
		t.Fatalf("trellis controlplane rejects the installed args %q: %v", rest, err)
	}
	if err := sub.ValidateRequiredFlags(); err != nil {
		t.Fatalf("installed args: %v", err)
	}
	if err := sub.ValidateFlagGroups(); err != nil {
		t.Fatalf("installed args: %v", err)
	}
	if extra := sub.Flags().Args(); len(extra) > 0 {
		t.Fatalf("stray arguments %q", extra)
	}
	declared := map[string]int32{}
	for _, p := range c.Ports {
		declared[p.Name] = p.ContainerPort
	}
	for flag, port := range map[string]string{"xds-address": "grpc-xds", "ca-address": "https-ca", "debug-address": "http-monitoring"} {
		got := sub.Flags().Lookup(flag).Value.String()
		if want := fmt.Sprintf(":%d", declared[port]); got != want {
			t.Errorf("--%s=%s, but the container declares %s on %d", flag, got, port, declared[port])
		}
	}
	probe := c.ReadinessProbe.HTTPGet
	if want := sub.Flags().Lookup("debug-address").Value.String(); fmt.Sprintf(":%d", probe.Port.IntVal) != want || probe.Path != "/ready" {
		t.Errorf("readiness probe %s on %d, want /ready on --debug-address %s", probe.Path, probe.Port.IntVal, want)
	}
}

func TestInstallCRDsOnlyPrintsIstiosFile(t *testing.T) {
	out, err := runCLI(context.Background(), "install", "--crds-only")
	if err != nil {
		t.Fatal(err)
	}
	if out != string(crds.YAML) {
		t.Error("--crds-only: want Istio's CRD file exactly")
	}
}

func TestInstallMistakesAreReported(t *testing.T) {
	empty := t.TempDir()
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no CA root", []string{"install", "--image", "x", "--ca-dir", empty}, "pass --ca-bundle FILE"},
		{"missing CA bundle file", []string{"install", "--image", "x", "--ca-bundle", empty + "/nope.pem"}, "--ca-bundle: open"},
		{"no image", []string{"install", "--ca-bundle", "../../internal/install/testdata/root-cert.pem"}, "image: required"},
		{"both CRD switches", []string{"install", "--crds-only", "--skip-crds"}, "none of the others can be"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := runCLI(context.Background(), tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

// TestInstalledControlPlaneBecomesReady runs `trellis controlplane` with the
// installed command line, its volumes laid out as the kubelet does (the
// istio ConfigMap's `mesh` as mesh.yaml behind ..data symlinks, the cacerts
// Secret made by docs/install.md's recipe) and loopback ports in place of
// the pod's: it reaches /ready, the readiness probe's endpoint, and serves
// xDS.
func TestInstalledControlPlaneBecomesReady(t *testing.T) {
	caDir := t.TempDir()
	if _, err := ca.LoadOrCreateDir(caDir, ca.Options{}); err != nil {
		t.Fatal(err)
	}
	out, err := runCLI(context.Background(), "install", "--skip-crds", "--image", "example.com/trellis:test", "--ca-dir", caDir)
	if err != nil {
		t.Fatalf("trellis install: %v\n%s", err, out)
	}
	var (
		dep  appsv1.Deployment
		mesh string
	)
	dec := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(out), 4096)
	for {
		var obj map[string]any
		if err := dec.Decode(&obj); err != nil {
			break
		}
		switch obj["kind"] {
		case "Deployment":
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj, &dep); err != nil {
				t.Fatal(err)
			}
		case "ConfigMap":
			mesh, _ = obj["data"].(map[string]any)["mesh"].(string)
		}
	}
	if mesh == "" || len(dep.Spec.Template.Spec.Containers) == 0 {
		t.Fatal("install printed no istio ConfigMap or no Deployment")
	}

	// The ConfigMap volume, as the kubelet writes it.
	configDir := t.TempDir()
	data := filepath.Join(configDir, "..2026_11_23_00_00_00.000000001")
	must(t, os.Mkdir(data, 0o755))
	must(t, os.WriteFile(filepath.Join(data, "mesh.yaml"), []byte(mesh), 0o644))
	must(t, os.Symlink(filepath.Base(data), filepath.Join(configDir, "..data")))
	must(t, os.Symlink(filepath.Join("..data", "mesh.yaml"), filepath.Join(configDir, "mesh.yaml")))
	// The cacerts Secret, made from the self-signed root.
	cacerts := t.TempDir()
	for name, from := range map[string]string{"ca-cert.pem": "ca-cert.pem", "ca-key.pem": "ca-key.pem", "root-cert.pem": "ca-cert.pem"} {
		b, err := os.ReadFile(filepath.Join(caDir, from))
		must(t, err)
		must(t, os.WriteFile(filepath.Join(cacerts, name), b, 0o600))
	}

	ports := map[string]int{}
	var args []string
	for _, a := range dep.Spec.Template.Spec.Containers[0].Args {
		name, value, _ := strings.Cut(a, "=")
		switch {
		case value == "/etc/istio/config":
			value = configDir
		case value == "/etc/cacerts":
			value = cacerts
		case strings.HasSuffix(name, "-address"):
			ports[name] = freePort(t)
			value = "127.0.0.1:" + strconv.Itoa(ports[name])
		}
		if value == "" {
			args = append(args, a)
		} else {
			args = append(args, name+"="+value)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var log string
	go func() {
		var err error
		log, err = runCLI(ctx, args...)
		done <- err
	}()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("controlplane: %v\n%s", err, log)
		}
	}
	defer stop()

	ready := fmt.Sprintf("http://127.0.0.1:%d/ready", ports["--debug-address"])
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(ready)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			stop()
			t.Fatalf("%s never answered 200 (last: %v):\n%s", ready, err, log)
		}
		time.Sleep(50 * time.Millisecond)
	}
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", ports["--xds-address"]))
	if err != nil {
		t.Fatalf("xDS: %v", err)
	}
	c.Close()
	stop()
	if !strings.Contains(log, "cacerts "+cacerts) {
		t.Errorf("the CA does not sign with the cacerts root:\n%s", log)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
