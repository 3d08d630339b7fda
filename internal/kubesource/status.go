package kubesource

import (
	"context"
	"encoding/json"
	"fmt"

	analysisv1alpha1 "istio.io/api/analysis/v1alpha1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
)

// The status an invalid Istio resource gets, as istiod's status writer
// gives one (IstioStatus.validationMessages): Istio's code for a resource
// its schema validation rejects.
const (
	StatusCode = "IST0106"
	StatusName = "SchemaValidationError"
	StatusURL  = "https://istio.io/latest/docs/reference/config/analysis/ist0106/"
	// StatusCondition is the condition that carries the problems' text
	// ("field.path: reason; ..."): Istio's CRDs prune any text field of a
	// validation message, so the text goes where Kubernetes keeps it.
	StatusCondition = "trellis.dev/Validated"
	// StatusFieldManager owns the fields the leader writes.
	StatusFieldManager = "trellis-controlplane"
)

// statusWriter puts each Istio resource's validation problems in its
// status, and takes them out once it is valid. Only the leader writes.
type statusWriter struct {
	dyn    dynamic.Interface
	leader *Elector
}

// sync brings o's status in line with errs (nil: valid). It reads what o
// holds from the informer's copy, so it writes only on a change, and a new
// leader corrects what the last one left.
func (w *statusWriter) sync(ctx context.Context, o istioObject, errs []error) error {
	if w == nil || o.status == nil || !w.leader.IsLeader() {
		return nil
	}
	msg := ""
	if len(errs) > 0 {
		msg = eventMessage(errs)
	}
	have := ourStatus(o.status)
	if msg == have.message && (msg == "" || o.status.GetObservedGeneration() == o.meta.Generation) {
		return nil
	}
	// The lists are replaced whole (a merge patch): keep what others wrote.
	var vms []any
	for _, m := range o.status.GetValidationMessages() {
		if m.GetType().GetCode() != StatusCode {
			vms = append(vms, m)
		}
	}
	var conds []any
	for _, c := range o.status.GetConditions() {
		if c.GetType() != StatusCondition {
			conds = append(conds, c)
		}
	}
	if msg != "" {
		vms = append(vms, map[string]any{"type": map[string]string{"code": StatusCode, "name": StatusName},
			"level": analysisv1alpha1.AnalysisMessageBase_ERROR.String(), "documentationUrl": StatusURL})
		conds = append(conds, map[string]any{"type": StatusCondition, "status": "False", "reason": StatusName,
			"message": msg, "lastTransitionTime": metav1.Now().UTC().Format("2006-01-02T15:04:05Z")})
	}
	body, err := json.Marshal(map[string]any{"status": map[string]any{
		"validationMessages": vms, "conditions": conds, "observedGeneration": o.meta.Generation}})
	if err != nil {
		return err
	}
	_, err = w.dyn.Resource(o.gvr()).Namespace(o.meta.Namespace).Patch(ctx, o.meta.Name, types.MergePatchType, body,
		metav1.PatchOptions{FieldManager: StatusFieldManager}, "status")
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return nil // gone or changed meanwhile; its event follows
	}
	if err != nil {
		return fmt.Errorf("%s: write status: %w", o.key(), err)
	}
	return nil
}

// ours is what the leader last wrote into a status: the problems' text.
type ours struct{ message string }

func ourStatus(s istioStatus) ours {
	for _, c := range s.GetConditions() {
		if c.GetType() == StatusCondition {
			return ours{message: c.GetMessage()}
		}
	}
	for _, m := range s.GetValidationMessages() {
		if m.GetType().GetCode() == StatusCode {
			return ours{message: "?"} // a message without its text: rewrite
		}
	}
	return ours{}
}

// gvr is the object's API resource, for the dynamic client.
func (o istioObject) gvr() schema.GroupVersionResource {
	gv, _ := schema.ParseGroupVersion(o.apiVersion)
	return gv.WithResource(o.resource)
}
