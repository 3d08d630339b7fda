package main

import (
	"context"
	"fmt"
	"strings"
	"testing"

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
