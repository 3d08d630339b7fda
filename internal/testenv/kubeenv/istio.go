package kubeenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	istioclient "istio.io/client-go/pkg/clientset/versioned"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/dynamic"
)

var crdResource = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// istioCRDsFile is where istio.io/api ships Istio's CustomResourceDefinitions (all of
// networking, security, telemetry and extensions.istio.io), relative to the module's root.
var istioCRDsFile = filepath.Join("kubernetes", "customresourcedefinitions.gen.yaml")

// InstallIstioCRDs installs Istio's real CRDs, with their schemas and validation rules, from the
// istio.io/api module at the version go.mod requires, and waits until every one is served. On the
// shared server they are installed once; later calls return at once.
func (e *Env) InstallIstioCRDs(t testing.TB) {
	t.Helper()
	e.crds.Lock()
	defer e.crds.Unlock()
	if e.crdsDone {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := installIstioCRDs(ctx, e); err != nil {
		t.Fatalf("install Istio CRDs: %v", err)
	}
	e.crdsDone = true
}

func installIstioCRDs(ctx context.Context, e *Env) error {
	path, err := istioCRDsPath()
	if err != nil {
		return err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	client, err := dynamic.NewForConfig(e.Config())
	if err != nil {
		return err
	}
	crds := client.Resource(crdResource)
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 64<<10)
	var names []string
	for {
		var obj unstructured.Unstructured
		if err := dec.Decode(&obj.Object); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		if obj.GetKind() != "CustomResourceDefinition" {
			continue
		}
		if _, err := crds.Create(ctx, &obj, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create CRD %s: %w", obj.GetName(), err)
		}
		names = append(names, obj.GetName())
	}
	if len(names) == 0 {
		return fmt.Errorf("%s: no CustomResourceDefinition", path)
	}
	for _, name := range names {
		err := wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(ctx context.Context) (bool, error) {
			crd, err := crds.Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			return established(crd), nil
		})
		if err != nil {
			return fmt.Errorf("CRD %s not established: %w", name, err)
		}
	}
	return nil
}

// established reports the CRD's Established condition: its resources are served.
func established(crd *unstructured.Unstructured) bool {
	conditions, _, _ := unstructured.NestedSlice(crd.Object, "status", "conditions")
	for _, c := range conditions {
		m, _ := c.(map[string]any)
		if m["type"] == "Established" && m["status"] == "True" {
			return true
		}
	}
	return false
}

// istioCRDsPath finds the CRD file in the module cache through the go command, which resolves
// istio.io/api to the version the main module requires.
func istioCRDsPath() (string, error) {
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	cmd := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "istio.io/api")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		var exitErr *exec.ExitError
		if errors.As(err, &exitErr) {
			return "", fmt.Errorf("go list -m istio.io/api: %v: %s", err, exitErr.Stderr)
		}
		return "", fmt.Errorf("go list -m istio.io/api: %v", err)
	}
	dir := strings.TrimSpace(string(out))
	if dir == "" {
		return "", errors.New("go list -m istio.io/api: module not downloaded")
	}
	return filepath.Join(dir, istioCRDsFile), nil
}

// IstioClient is a client of Istio's API groups on this server; call InstallIstioCRDs first.
func (e *Env) IstioClient(t testing.TB) istioclient.Interface {
	t.Helper()
	ic, err := istioclient.NewForConfig(e.Config())
	if err != nil {
		t.Fatal(err)
	}
	return ic
}
