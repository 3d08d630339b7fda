package inject

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trellis-mesh/trellis/internal/proxyconfig"
)

// The webhook's address, Istio's: istiod serves /inject on 15017 (its Service maps 443 to it).
const (
	WebhookPort = 15017
	WebhookPath = "/inject"
)

// maxReviewBytes bounds an AdmissionReview body; pods are far smaller.
const maxReviewBytes = 8 << 20

// Source is what the webhook reads from the cluster for each pod.
type Source interface {
	// Namespace returns the namespace; nil, nil when it is not known (yet).
	Namespace(name string) (*corev1.Namespace, error)
	ProxyConfigs() []*proxyconfig.Resource
	Mesh() (*meshv1alpha1.MeshConfig, error)
}

// WebhookOptions configure NewWebhook.
type WebhookOptions struct {
	Params Params
	Source Source
	Logger *slog.Logger // nil: slog.Default()
}

type webhook struct {
	opts WebhookOptions
	log  *slog.Logger
}

// NewWebhook returns the mutating admission webhook's handler: admission/v1 AdmissionReviews
// on POST WebhookPath, answered with a JSONPatch adding the sidecar when Required says so. A
// pod whose settings do not resolve (a bad annotation, say) is rejected with the field error,
// as Istio's injector does, rather than started without its proxy.
func NewWebhook(opts WebhookOptions) http.Handler {
	w := &webhook{opts: opts, log: opts.Logger}
	if w.log == nil {
		w.log = slog.Default()
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+WebhookPath, w.serve)
	return mux
}

func (w *webhook) serve(rw http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxReviewBytes))
	if err != nil {
		http.Error(rw, "reading the AdmissionReview: "+err.Error(), http.StatusBadRequest)
		return
	}
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &review); err != nil || review.Request == nil {
		http.Error(rw, "want an admission.k8s.io/v1 AdmissionReview with a request", http.StatusBadRequest)
		return
	}
	resp := w.admit(review.Request)
	resp.UID = review.Request.UID
	out := admissionv1.AdmissionReview{TypeMeta: review.TypeMeta, Response: resp}
	if out.APIVersion == "" {
		out.APIVersion, out.Kind = "admission.k8s.io/v1", "AdmissionReview"
	}
	rw.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(rw).Encode(out) // the apiserver went away: nothing to do
}

// admit decides for one request; errors deny the pod with their message.
func (w *webhook) admit(req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	allow := &admissionv1.AdmissionResponse{Allowed: true}
	if req.Kind.Kind != "Pod" || req.Operation != admissionv1.Create || req.SubResource != "" {
		return allow
	}
	deny := func(err error) *admissionv1.AdmissionResponse {
		w.log.Warn("sidecar injection failed", "namespace", req.Namespace, "pod", req.Name, "err", err)
		return &admissionv1.AdmissionResponse{Result: &metav1.Status{
			Status: metav1.StatusFailure, Reason: metav1.StatusReasonInvalid, Code: http.StatusUnprocessableEntity,
			Message: "sidecar injection: " + err.Error(),
		}}
	}
	pod := &corev1.Pod{}
	if err := json.Unmarshal(req.Object.Raw, pod); err != nil {
		return deny(fmt.Errorf("decoding the pod: %w", err))
	}
	if pod.Namespace == "" {
		pod.Namespace = req.Namespace
	}
	ns, err := w.opts.Source.Namespace(req.Namespace)
	if err != nil {
		return deny(err)
	}
	if ns == nil {
		// Not in the cache yet: without its labels only the pod's own opt-in counts.
		ns = &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: req.Namespace}}
	}
	name := pod.Name
	if name == "" {
		name = pod.GenerateName + "*"
	}
	if ok, why := Required(ns, pod); !ok {
		w.log.Debug("sidecar not injected", "namespace", req.Namespace, "pod", name, "reason", why)
		return allow
	}
	mesh, err := w.opts.Source.Mesh()
	if err != nil {
		return deny(err)
	}
	named := *pod // errors name a generateName pod "app-*"
	named.Name = name
	eff, conflicts, err := proxyconfig.Resolve(proxyconfig.Input{
		Mesh: mesh, RootNamespace: mesh.GetRootNamespace(), Namespace: ns, Pod: &named,
		ProxyConfigs: w.opts.Source.ProxyConfigs(),
	})
	if err != nil {
		return deny(err)
	}
	injected, warnings, err := Inject(pod, WorkloadName(pod), eff, w.opts.Params)
	if err != nil {
		return deny(err)
	}
	for _, c := range conflicts {
		warnings = append(warnings, fmt.Sprintf("ProxyConfigs %v ignored: %s applies (the oldest wins)", c.Ignored, c.Chosen))
	}
	orig, err := toMap(pod)
	if err != nil {
		return deny(err)
	}
	mod, err := toMap(injected)
	if err != nil {
		return deny(err)
	}
	patch, err := json.Marshal(diff(orig, mod))
	if err != nil {
		return deny(err)
	}
	w.log.Info("sidecar injected", "namespace", req.Namespace, "pod", name)
	pt := admissionv1.PatchTypeJSONPatch
	return &admissionv1.AdmissionResponse{Allowed: true, Patch: patch, PatchType: &pt, Warnings: warnings}
}

// Serve runs h over TLS on ln until ctx is done, then shuts down gracefully. The control
// plane passes NewWebhook's handler and a tls.Config from ServingTLS or FileTLS.
func Serve(ctx context.Context, ln net.Listener, cfg *tls.Config, h http.Handler) error {
	srv := &http.Server{Handler: h, TLSConfig: cfg, ReadHeaderTimeout: 10 * time.Second}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		<-ctx.Done()
		sctx, stop := context.WithTimeout(context.Background(), 5*time.Second)
		defer stop()
		_ = srv.Shutdown(sctx) // fails only with requests stuck past the timeout
	}()
	err := srv.ServeTLS(ln, "", "")
	cancel()
	<-done
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}
