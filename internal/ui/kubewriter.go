package ui

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	istiov1 "istio.io/client-go/pkg/apis/networking/v1"
	istioclient "istio.io/client-go/pkg/clientset/versioned"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/yaml"

	"github.com/trellis-mesh/trellis/internal/config"
	"github.com/trellis-mesh/trellis/internal/model"
)

// KubeWriter writes weights back to VirtualServices in a Kubernetes API
// server, for configs read from Kubernetes. The control plane's Kubernetes
// source then sees the change like any other.
type KubeWriter struct {
	client istioclient.Interface
}

// NewKubeWriter returns a writer using client.
func NewKubeWriter(client istioclient.Interface) *KubeWriter { return &KubeWriter{client: client} }

// Editable implements WeightWriter: the resources the Kubernetes source read.
func (w *KubeWriter) Editable(vs *model.VirtualService) bool {
	return vs.Source.File == model.KubernetesSource || vs.Source.File == ""
}

// SetWeights implements WeightWriter: it reads the object, sets the
// weights, validates the result as the file loader validates a resource,
// and updates the object guarded by its resourceVersion (re-reading on a
// conflict). Only the object's own validity is checked: the other
// resources live in the cluster, not here.
func (w *KubeWriter) SetWeights(ctx context.Context, vs *model.VirtualService, http int, weights []int32) (*model.Config, error) {
	api := w.client.NetworkingV1().VirtualServices(vs.Namespace)
	var cfg *model.Config
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		obj, err := api.Get(ctx, vs.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		routes := obj.Spec.GetHttp()
		if http >= len(routes) || len(routes[http].GetRoute()) != len(weights) {
			return &InvalidChange{Err: fmt.Errorf("%s: spec.http[%d] is not as the console showed it (was it edited meanwhile?)", vs.Key(), http)}
		}
		for i, d := range routes[http].GetRoute() {
			d.Weight = weights[i]
		}
		if cfg, err = validateObject(obj); err != nil {
			return err
		}
		_, err = api.Update(ctx, obj, metav1.UpdateOptions{FieldManager: "trellis-console"})
		return err
	})
	var invalid *InvalidChange
	switch {
	case errors.As(err, &invalid):
		return nil, err
	case apierrors.IsInvalid(err) || apierrors.IsBadRequest(err):
		return nil, &InvalidChange{Err: err} // the API server's own validation
	case err != nil:
		return nil, fmt.Errorf("%s: %w", vs.Key(), err)
	}
	for _, v := range cfg.VirtualServices {
		v.Source = vs.Source // not the scratch file
	}
	return cfg, nil
}

// validateObject runs the config loader's validation over obj alone.
func validateObject(obj *istiov1.VirtualService) (*model.Config, error) {
	doc := map[string]any{
		"apiVersion": "networking.istio.io/v1",
		"kind":       "VirtualService",
		"metadata":   map[string]any{"name": obj.Name, "namespace": obj.Namespace},
		"spec":       &obj.Spec,
	}
	data, err := yaml.Marshal(doc)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "trellis-console-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "virtualservice.yaml")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return nil, err
	}
	cfg, _, err := config.LoadDir(dir)
	if err != nil {
		// Name the object, not the scratch file.
		where := "kubernetes VirtualService " + obj.Namespace + "/" + obj.Name
		msg := strings.ReplaceAll(err.Error(), path, where)
		return nil, &InvalidChange{Err: errors.New(msg)}
	}
	return cfg, nil
}
