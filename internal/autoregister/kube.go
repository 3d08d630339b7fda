package autoregister

import (
	"context"
	"errors"
	"fmt"
	"maps"

	"google.golang.org/protobuf/proto"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	istioclient "istio.io/client-go/pkg/clientset/versioned"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/trellis-mesh/trellis/internal/model"
)

// KubeWriter keeps the Controller's entries in the API server: created
// (owned by their WorkloadGroup, so that deleting the group deletes them),
// updated, and deleted once the Controller drops them, unless another
// replica has taken the workload over meanwhile (ControllerAnnotation).
type KubeWriter struct {
	ic       istioclient.Interface
	identity string
	written  map[string]bool // "ns/name" of the entries this replica wrote
}

// NewKubeWriter writes as identity (the replica's ControllerAnnotation).
func NewKubeWriter(cfg *rest.Config, identity string) (*KubeWriter, error) {
	ic, err := istioclient.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("auto-registration: %w", err)
	}
	return &KubeWriter{ic: ic, identity: identity, written: map[string]bool{}}, nil
}

// Sync makes the API server hold entries, and removes the entries this
// replica wrote that are no longer among them. It carries on past errors
// and returns them joined.
func (w *KubeWriter) Sync(ctx context.Context, entries []*model.WorkloadEntry) error {
	var errs []error
	want := map[string]bool{}
	for _, e := range entries {
		key := e.Namespace + "/" + e.Name
		want[key] = true
		if err := w.put(ctx, e); err != nil {
			errs = append(errs, fmt.Errorf("auto-registration: WorkloadEntry %s: %w", key, err))
			continue
		}
		w.written[key] = true
	}
	for key := range w.written {
		if want[key] {
			continue
		}
		ns, name := splitKey(key)
		api := w.ic.NetworkingV1().WorkloadEntries(ns)
		cur, err := api.Get(ctx, name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
		case err != nil:
			errs = append(errs, fmt.Errorf("auto-registration: WorkloadEntry %s: %w", key, err))
			continue
		case cur.Annotations[ControllerAnnotation] != w.identity:
			// The workload reconnected to another replica, which owns it now.
		default:
			err = api.Delete(ctx, name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{ResourceVersion: &cur.ResourceVersion}})
			if err != nil && !apierrors.IsNotFound(err) {
				errs = append(errs, fmt.Errorf("auto-registration: delete WorkloadEntry %s: %w", key, err))
				continue
			}
		}
		delete(w.written, key)
	}
	return errors.Join(errs...)
}

func (w *KubeWriter) put(ctx context.Context, e *model.WorkloadEntry) error {
	api := w.ic.NetworkingV1().WorkloadEntries(e.Namespace)
	cur, err := api.Get(ctx, e.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		group, err := w.ic.NetworkingV1().WorkloadGroups(e.Namespace).Get(ctx, e.Annotations[GroupAnnotation], metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("its WorkloadGroup: %w", err)
		}
		we := &networkingv1.WorkloadEntry{ObjectMeta: metav1.ObjectMeta{Name: e.Name, Namespace: e.Namespace,
			Labels: e.Labels, Annotations: e.Annotations,
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "networking.istio.io/v1", Kind: "WorkloadGroup",
				Name: group.Name, UID: group.UID, Controller: new(true)}}}}
		proto.Merge(&we.Spec, e.Spec)
		_, err = api.Create(ctx, we, metav1.CreateOptions{})
		return err
	}
	if err != nil {
		return err
	}
	if maps.Equal(cur.Labels, e.Labels) && maps.Equal(cur.Annotations, e.Annotations) && proto.Equal(&cur.Spec, e.Spec) {
		return nil
	}
	cur = cur.DeepCopy()
	cur.Labels, cur.Annotations = e.Labels, e.Annotations
	cur.Spec.Reset()
	proto.Merge(&cur.Spec, e.Spec)
	_, err = api.Update(ctx, cur, metav1.UpdateOptions{})
	return err
}

func splitKey(key string) (ns, name string) {
	for i := range len(key) {
		if key[i] == '/' {
			return key[:i], key[i+1:]
		}
	}
	return "", key
}
