package autoregister

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
	metav1alpha1 "istio.io/api/meta/v1alpha1"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	istioclient "istio.io/client-go/pkg/clientset/versioned"
	networkingclient "istio.io/client-go/pkg/clientset/versioned/typed/networking/v1"
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

// CleanStale deletes the auto-registered WorkloadEntries of every
// namespace that no replica looks after any more (see Stale), except those
// in keep, this replica's own; it returns the "ns/name" of those deleted.
// A replica that crashes leaves its proxies' entries behind: istiod
// sweeps them by the same rules. A proxy that reconnects meanwhile
// changes its entry, and the delete, conditional on the version read,
// then fails and is skipped.
func (w *KubeWriter) CleanStale(ctx context.Context, now time.Time, grace, maxConnAge time.Duration, keep []*model.WorkloadEntry) ([]string, error) {
	list, err := w.ic.NetworkingV1().WorkloadEntries("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("auto-registration: list WorkloadEntries: %w", err)
	}
	ours := map[string]bool{}
	for _, e := range keep {
		ours[e.Namespace+"/"+e.Name] = true
	}
	var deleted []string
	var errs []error
	for _, we := range list.Items {
		key := we.Namespace + "/" + we.Name
		if ours[key] || !Stale(we.Annotations, now, grace, maxConnAge) {
			continue
		}
		err := w.ic.NetworkingV1().WorkloadEntries(we.Namespace).Delete(ctx, we.Name,
			metav1.DeleteOptions{Preconditions: &metav1.Preconditions{ResourceVersion: &we.ResourceVersion}})
		switch {
		case err == nil:
			deleted = append(deleted, key)
		case apierrors.IsNotFound(err) || apierrors.IsConflict(err):
		default:
			errs = append(errs, fmt.Errorf("auto-registration: delete stale WorkloadEntry %s: %w", key, err))
		}
	}
	return deleted, errors.Join(errs...)
}

// Stale reports whether an entry with these annotations is auto-registered
// and left behind, by istiod's rules: disconnected for longer than the
// grace period, or connected for longer than 1.5 times the maximum
// connection age (0: none), which a live proxy's reconnects never reach.
func Stale(ann map[string]string, now time.Time, grace, maxConnAge time.Duration) bool {
	if ann[GroupAnnotation] == "" {
		return false // not auto-registered: the user's
	}
	if at, ok := ann[DisconnectedAtAnnotation]; ok {
		t, err := time.Parse(time.RFC3339Nano, at)
		return err == nil && now.Sub(t) > grace
	}
	t, err := time.Parse(time.RFC3339Nano, ann[ConnectedAtAnnotation])
	return err == nil && maxConnAge > 0 && now.Sub(t) > maxConnAge+maxConnAge/2
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
		if cur, err = api.Create(ctx, we, metav1.CreateOptions{}); err != nil {
			return err
		}
		return putHealth(ctx, api, cur, e)
	}
	if err != nil {
		return err
	}
	if !maps.Equal(cur.Labels, e.Labels) || !maps.Equal(cur.Annotations, e.Annotations) || !proto.Equal(&cur.Spec, e.Spec) {
		cur = cur.DeepCopy()
		cur.Labels, cur.Annotations = e.Labels, e.Annotations
		cur.Spec.Reset()
		proto.Merge(&cur.Spec, e.Spec)
		if cur, err = api.Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
			return err
		}
	}
	return putHealth(ctx, api, cur, e)
}

// putHealth writes e's Healthy condition (its proxy's last report) into
// cur's status, as istiod's health controller does; every replica reads
// it back from there (model.WorkloadHealthy).
func putHealth(ctx context.Context, api networkingclient.WorkloadEntryInterface, cur *networkingv1.WorkloadEntry, e *model.WorkloadEntry) error {
	want := e.Condition(model.ConditionHealthy)
	if want == nil {
		return nil
	}
	i := slices.IndexFunc(cur.Status.Conditions, func(c *metav1alpha1.IstioCondition) bool { return c.GetType() == model.ConditionHealthy })
	if i >= 0 && cur.Status.Conditions[i].GetStatus() == want.Status && cur.Status.Conditions[i].GetMessage() == want.Message {
		return nil
	}
	cur = cur.DeepCopy()
	// The agent reports transitions only, so the probe time is the
	// transition's, as istiod writes them.
	now := timestamppb.Now()
	cond := &metav1alpha1.IstioCondition{Type: want.Type, Status: want.Status, Message: want.Message, LastProbeTime: now, LastTransitionTime: now}
	if i >= 0 {
		cur.Status.Conditions[i] = cond
	} else {
		cur.Status.Conditions = append(cur.Status.Conditions, cond)
	}
	_, err := api.UpdateStatus(ctx, cur, metav1.UpdateOptions{})
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
