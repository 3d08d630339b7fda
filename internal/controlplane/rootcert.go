package controlplane

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"github.com/trellis-mesh/trellis/internal/kubesource"
)

// Istio's mesh root ConfigMap: istiod writes it into every namespace and
// injected proxies mount root-cert.pem from it to verify the CA and peers.
const (
	RootCertConfigMap = "istio-ca-root-cert"
	RootCertKey       = "root-cert.pem"
)

// rootCertResync re-checks every namespace this often, retrying writes
// that failed (RBAC fixed later, the API server briefly away).
const rootCertResync = 5 * time.Minute

// rootCertWriter keeps RootCertConfigMap holding the CA's root in every
// namespace: created with the namespace, put back when edited or deleted.
type rootCertWriter struct {
	kube       kubernetes.Interface
	root       string
	log        *slog.Logger
	configMaps corelisters.ConfigMapLister
	leader     *kubesource.Elector // only the leader writes
	elected    chan struct{}
}

// newRootCertWriter is nil without the Kubernetes source or the CA.
func newRootCertWriter(cfg *rest.Config, caSvc *caService, leader *kubesource.Elector, log *slog.Logger) (*rootCertWriter, error) {
	if cfg == nil || caSvc == nil {
		return nil, nil
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("control plane: %s writer: %w", RootCertConfigMap, err)
	}
	w := &rootCertWriter{kube: kube, root: string(caSvc.ready.RootPEM()), log: log, leader: leader, elected: make(chan struct{}, 1)}
	leader.OnElected(func() {
		select {
		case w.elected <- struct{}{}:
		default:
		}
	})
	return w, nil
}

// run writes until ctx is done; the channel closes once its informers
// have stopped.
func (w *rootCertWriter) run(ctx context.Context) <-chan struct{} {
	done := make(chan struct{})
	if w == nil {
		close(done)
		return done
	}
	nsf := informers.NewSharedInformerFactory(w.kube, rootCertResync)
	// Only our ConfigMaps: RBAC grants list/watch by name with this selector.
	cmf := informers.NewSharedInformerFactoryWithOptions(w.kube, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.FieldSelector = "metadata.name=" + RootCertConfigMap }))
	w.configMaps = cmf.Core().V1().ConfigMaps().Lister()
	nsInf := nsf.Core().V1().Namespaces().Informer()
	cmInf := cmf.Core().V1().ConfigMaps().Informer()
	go func() {
		defer close(done)
		defer nsf.Shutdown()
		defer cmf.Shutdown()
		cmf.Start(ctx.Done())
		// Namespaces are handled once the ConfigMaps are known, so a restart
		// does not rewrite ConfigMaps that are already right.
		if !cache.WaitForCacheSync(ctx.Done(), cmInf.HasSynced) {
			return
		}
		_, _ = cmInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			UpdateFunc: func(_, obj any) {
				if cm, ok := obj.(*corev1.ConfigMap); ok {
					w.ensure(ctx, cm.Namespace)
				}
			},
			DeleteFunc: func(obj any) {
				if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
					obj = d.Obj
				}
				if cm, ok := obj.(*corev1.ConfigMap); ok {
					w.ensure(ctx, cm.Namespace)
				}
			},
		})
		_, _ = nsInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    func(obj any) { w.namespace(ctx, obj) },
			UpdateFunc: func(_, obj any) { w.namespace(ctx, obj) },
		})
		nsf.Start(ctx.Done())
		for {
			select {
			case <-ctx.Done():
				return
			case <-w.elected: // what a follower held back
				if cache.WaitForCacheSync(ctx.Done(), nsInf.HasSynced) {
					for _, obj := range nsInf.GetStore().List() {
						w.namespace(ctx, obj)
					}
				}
			}
		}
	}()
	return done
}

func (w *rootCertWriter) namespace(ctx context.Context, obj any) {
	ns, ok := obj.(*corev1.Namespace)
	if !ok || ns.Status.Phase == corev1.NamespaceTerminating || ns.DeletionTimestamp != nil {
		return
	}
	w.ensure(ctx, ns.Name)
}

// ensure creates or corrects the ConfigMap in ns. Failures are logged and
// retried at the next resync.
func (w *rootCertWriter) ensure(ctx context.Context, ns string) {
	if ctx.Err() != nil || !w.leader.IsLeader() {
		return
	}
	cms := w.kube.CoreV1().ConfigMaps(ns)
	cm, err := w.configMaps.ConfigMaps(ns).Get(RootCertConfigMap)
	switch {
	case apierrors.IsNotFound(err):
		_, err = cms.Create(ctx, &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: RootCertConfigMap, Namespace: ns, Labels: map[string]string{"istio.io/config": "true"}},
			Data:       map[string]string{RootCertKey: w.root},
		}, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) || apierrors.IsForbidden(err) && isTerminating(err) {
			return // our cache is behind; its event follows
		}
	case err != nil:
	case cm.Data[RootCertKey] == w.root:
		return
	default:
		cm = cm.DeepCopy()
		if cm.Data == nil {
			cm.Data = map[string]string{}
		}
		cm.Data[RootCertKey] = w.root
		_, err = cms.Update(ctx, cm, metav1.UpdateOptions{})
		if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
			return // changed meanwhile; its event follows
		}
	}
	if err != nil && ctx.Err() == nil {
		w.log.Warn("could not write the mesh root ConfigMap; retrying at the next resync",
			"namespace", ns, "configmap", RootCertConfigMap, "error", err)
		return
	}
	if err == nil {
		w.log.Debug("wrote the mesh root ConfigMap", "namespace", ns, "configmap", RootCertConfigMap)
	}
}

// isTerminating is the API server's refusal to create in a namespace being
// deleted.
func isTerminating(err error) bool {
	return apierrors.HasStatusCause(err, corev1.NamespaceTerminatingCause)
}
