package controlplane

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	admissionlisters "k8s.io/client-go/listers/admissionregistration/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/trellis-mesh/trellis/internal/install"
	"github.com/trellis-mesh/trellis/internal/kubesource"
)

// caBundleResync re-checks the webhook configuration this often, retrying
// a write that failed (RBAC fixed later, the API server briefly away).
const caBundleResync = time.Minute

// caBundlePatcher keeps the caBundle of every webhook in install's
// MutatingWebhookConfiguration equal to the CA's root, which signed the
// webhook's serving certificate, as istiod's webhook patcher does: install
// can then print the configuration without knowing a root that is only
// created in the cluster (istio-ca-secret), and a caBundle reset by a
// re-apply or by hand is put back.
type caBundlePatcher struct {
	kube    kubernetes.Interface
	name    string // the MutatingWebhookConfiguration
	root    []byte
	log     *slog.Logger
	leader  *kubesource.Elector // only the leader writes
	elected chan struct{}
	hooks   admissionlisters.MutatingWebhookConfigurationLister
}

// newCABundlePatcher is nil unless the webhook is served (it needs the
// Kubernetes source and the CA).
func newCABundlePatcher(opts Options, caSvc *caService, leader *kubesource.Elector) (*caBundlePatcher, error) {
	if opts.WebhookAddress == "" || opts.Kubernetes == nil || caSvc == nil {
		return nil, nil
	}
	kube, err := kubernetes.NewForConfig(opts.Kubernetes)
	if err != nil {
		return nil, fmt.Errorf("control plane: caBundle patcher: %w", err)
	}
	p := &caBundlePatcher{kube: kube, name: install.WebhookName, root: caSvc.ready.RootPEM(), log: opts.Logger,
		leader: leader, elected: make(chan struct{}, 1)}
	leader.OnElected(func() {
		select {
		case p.elected <- struct{}{}:
		default:
		}
	})
	return p, nil
}

// run patches until ctx is done; the channel closes once its informer has
// stopped.
func (p *caBundlePatcher) run(ctx context.Context) <-chan struct{} {
	done := make(chan struct{})
	if p == nil {
		close(done)
		return done
	}
	// Only our object: RBAC grants get/list/watch on this one name, and a
	// list by name is a list with this field selector.
	f := informers.NewSharedInformerFactoryWithOptions(p.kube, caBundleResync,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.FieldSelector = "metadata.name=" + p.name }))
	hooks := f.Admissionregistration().V1().MutatingWebhookConfigurations()
	p.hooks = hooks.Lister()
	inf := hooks.Informer()
	go func() {
		defer close(done)
		defer f.Shutdown()
		f.Start(ctx.Done())
		if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
			return
		}
		if _, err := p.hooks.Get(p.name); apierrors.IsNotFound(err) {
			p.log.Info("no MutatingWebhookConfiguration to keep the caBundle of; patched once it is created",
				"webhook_configuration", p.name)
		}
		// Resyncs come as updates: a failed write is retried with them.
		_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    func(obj any) { p.ensure(ctx, obj) },
			UpdateFunc: func(_, obj any) { p.ensure(ctx, obj) },
			DeleteFunc: func(any) {
				p.log.Info("MutatingWebhookConfiguration deleted; its caBundle is patched again once it is recreated",
					"webhook_configuration", p.name)
			},
		})
		for {
			select {
			case <-ctx.Done():
				return
			case <-p.elected: // what a follower held back
				if hook, err := p.hooks.Get(p.name); err == nil {
					p.ensure(ctx, hook)
				}
			}
		}
	}()
	return done
}

// ensure writes the root into every webhook of obj whose caBundle differs.
// Failures are logged and retried at the next resync.
func (p *caBundlePatcher) ensure(ctx context.Context, obj any) {
	hook, ok := obj.(*admissionv1.MutatingWebhookConfiguration)
	if !ok || hook.Name != p.name || ctx.Err() != nil || !p.leader.IsLeader() {
		return
	}
	stale := false
	for _, w := range hook.Webhooks {
		if !bytes.Equal(w.ClientConfig.CABundle, p.root) {
			stale = true
		}
	}
	if !stale {
		return
	}
	hook = hook.DeepCopy()
	for i := range hook.Webhooks {
		hook.Webhooks[i].ClientConfig.CABundle = p.root
	}
	// An update, not a patch: its resourceVersion makes a concurrent edit a
	// conflict, whose event brings the newer object here again.
	_, err := p.kube.AdmissionregistrationV1().MutatingWebhookConfigurations().Update(ctx, hook, metav1.UpdateOptions{})
	switch {
	case err == nil:
		p.log.Info("patched the webhook configuration's caBundle with the CA's root",
			"webhook_configuration", p.name, "webhooks", len(hook.Webhooks))
	case apierrors.IsConflict(err) || apierrors.IsNotFound(err) || ctx.Err() != nil:
		// Changed or deleted meanwhile: its event follows.
	default:
		p.log.Warn("could not patch the webhook configuration's caBundle; retrying at the next resync",
			"webhook_configuration", p.name, "error", err)
	}
}
