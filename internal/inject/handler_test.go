package inject

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// The webhook answers what is not a pod CREATE without a patch, and refuses what is not an
// AdmissionReview; neither needs the cluster.
func TestWebhookLeavesOtherRequestsAlone(t *testing.T) {
	h := NewWebhook(WebhookOptions{Params: testParams(true)})
	post := func(body []byte) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, WebhookPath, bytes.NewReader(body)))
		return rec
	}
	if rec := post([]byte("not json")); rec.Code != http.StatusBadRequest {
		t.Errorf("garbage: status %d, want 400", rec.Code)
	}
	for _, req := range []admissionv1.AdmissionRequest{
		{UID: "1", Kind: metav1.GroupVersionKind{Version: "v1", Kind: "Service"}, Operation: admissionv1.Create},
		{UID: "2", Kind: metav1.GroupVersionKind{Version: "v1", Kind: "Pod"}, Operation: admissionv1.Update},
		{UID: "3", Kind: metav1.GroupVersionKind{Version: "v1", Kind: "Pod"}, Operation: admissionv1.Create, SubResource: "binding"},
	} {
		body, _ := json.Marshal(admissionv1.AdmissionReview{
			TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
			Request:  &req,
		})
		rec := post(body)
		var review admissionv1.AdmissionReview
		if err := json.Unmarshal(rec.Body.Bytes(), &review); err != nil || review.Response == nil {
			t.Fatalf("%s %s: status %d body %s", req.Operation, req.Kind.Kind, rec.Code, rec.Body)
		}
		r := review.Response
		if r.UID != types.UID(req.UID) || !r.Allowed || r.Patch != nil {
			t.Errorf("%s %s: response %+v, want allowed without patch for UID %s", req.Operation, req.Kind.Kind, r, req.UID)
		}
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, WebhookPath, nil))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("GET: status %d, want 405", rec.Code)
	}
}
