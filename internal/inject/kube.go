package inject

import (
	"context"
	"fmt"
	"sync"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	istioclient "istio.io/client-go/pkg/clientset/versioned"
	istioinformers "istio.io/client-go/pkg/informers/externalversions"
	istiolisters "istio.io/client-go/pkg/listers/networking/v1beta1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/trellis-mesh/trellis/internal/model"
	"github.com/trellis-mesh/trellis/internal/proxyconfig"
)

// MeshConfigMap is Istio's mesh config: the ConfigMap "istio" in the control plane's
// namespace, MeshConfig YAML under the key "mesh".
const (
	MeshConfigMap = "istio"
	meshKey       = "mesh"
)

// KubeSource is the webhook's view of the cluster, kept by informers: Namespaces (their
// injection labels), networking.istio.io ProxyConfigs in every namespace, and the istio
// ConfigMap of the control plane's namespace. It needs list/watch on all three.
//
// It is deliberately small; a later, general Kubernetes source will replace it.
type KubeSource struct {
	namespaces   corelisters.NamespaceLister
	configMaps   corelisters.ConfigMapNamespaceLister
	proxyConfigs istiolisters.ProxyConfigLister
	cancel       context.CancelFunc
	stopOnce     sync.Once
	shutdown     []func()
}

// NewKubeSource starts the informers and waits for their first lists; Stop ends them.
// configNamespace is where the istio ConfigMap lives (istio-system for Istio).
func NewKubeSource(ctx context.Context, kube kubernetes.Interface, istio istioclient.Interface, configNamespace string) (*KubeSource, error) {
	ctx, cancel := context.WithCancel(ctx)
	all := informers.NewSharedInformerFactory(kube, 0)
	cms := informers.NewSharedInformerFactoryWithOptions(kube, 0, informers.WithNamespace(configNamespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.FieldSelector = "metadata.name=" + MeshConfigMap }))
	ist := istioinformers.NewSharedInformerFactory(istio, 0)
	s := &KubeSource{
		namespaces:   all.Core().V1().Namespaces().Lister(),
		configMaps:   cms.Core().V1().ConfigMaps().Lister().ConfigMaps(configNamespace),
		proxyConfigs: ist.Networking().V1beta1().ProxyConfigs().Lister(),
		cancel:       cancel,
		shutdown:     []func(){all.Shutdown, cms.Shutdown, ist.Shutdown},
	}
	all.Start(ctx.Done())
	cms.Start(ctx.Done())
	ist.Start(ctx.Done())
	synced := []map[string]bool{}
	for _, f := range []interface {
		WaitForCacheSync(<-chan struct{}) map[string]bool
	}{typeNames{all}, typeNames{cms}, istioTypeNames{ist}} {
		synced = append(synced, f.WaitForCacheSync(ctx.Done()))
	}
	for _, m := range synced {
		for name, ok := range m {
			if !ok {
				s.Stop()
				return nil, fmt.Errorf("injection source: %s informer did not sync: %w", name, context.Cause(ctx))
			}
		}
	}
	return s, nil
}

// Stop ends the informers and waits for their goroutines.
func (s *KubeSource) Stop() {
	s.stopOnce.Do(func() {
		s.cancel()
		for _, f := range s.shutdown {
			f()
		}
	})
}

// Namespace implements Source.
func (s *KubeSource) Namespace(name string) (*corev1.Namespace, error) {
	ns, err := s.namespaces.Get(name)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	return ns, err
}

// ProxyConfigs implements Source.
func (s *KubeSource) ProxyConfigs() []*proxyconfig.Resource {
	list, err := s.proxyConfigs.List(labels.Everything())
	if err != nil {
		return nil // a lister over a cache does not fail
	}
	out := make([]*proxyconfig.Resource, 0, len(list))
	for _, pc := range list {
		out = append(out, &proxyconfig.Resource{
			Name: pc.Name, Namespace: pc.Namespace, Created: pc.CreationTimestamp.Time,
			Annotations: pc.Annotations, Spec: &pc.Spec,
		})
	}
	return out
}

// Mesh implements Source: the istio ConfigMap's mesh over Trellis's defaults, as Istio
// applies a user's mesh config; the defaults when there is no ConfigMap.
func (s *KubeSource) Mesh() (*meshv1alpha1.MeshConfig, error) {
	mesh := model.DefaultMesh()
	cm, err := s.configMaps.Get(MeshConfigMap)
	if apierrors.IsNotFound(err) {
		return mesh, nil
	}
	if err != nil {
		return nil, err
	}
	if err := ParseMesh(cm.Data[meshKey], mesh); err != nil {
		return nil, fmt.Errorf("ConfigMap %s/%s: data.%s: %w", cm.Namespace, cm.Name, meshKey, err)
	}
	return mesh, nil
}

// ParseMesh merges MeshConfig YAML into mesh. Unknown fields are ignored, as Istio reads a
// mesh config written for a newer version.
func ParseMesh(text string, mesh *meshv1alpha1.MeshConfig) error {
	if text == "" {
		return nil
	}
	js, err := yaml.YAMLToJSON([]byte(text))
	if err != nil {
		return err
	}
	if string(js) == "null" {
		return nil
	}
	user := &meshv1alpha1.MeshConfig{}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(js, user); err != nil {
		return err
	}
	proto.Merge(mesh, user)
	return nil
}

// typeNames adapts a client-go factory's sync report to type names.
type typeNames struct {
	f informers.SharedInformerFactory
}

func (t typeNames) WaitForCacheSync(stop <-chan struct{}) map[string]bool {
	out := map[string]bool{}
	for typ, ok := range t.f.WaitForCacheSync(stop) {
		out[typ.String()] = ok
	}
	return out
}

type istioTypeNames struct {
	f istioinformers.SharedInformerFactory
}

func (t istioTypeNames) WaitForCacheSync(stop <-chan struct{}) map[string]bool {
	out := map[string]bool{}
	for typ, ok := range t.f.WaitForCacheSync(stop) {
		out[typ.String()] = ok
	}
	return out
}

var _ Source = (*KubeSource)(nil)
