package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	istioclient "istio.io/client-go/pkg/clientset/versioned"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"

	"github.com/trellis-mesh/trellis/internal/config"
	"github.com/trellis-mesh/trellis/internal/model"
	"github.com/trellis-mesh/trellis/internal/proxyconfig"
)

// hierarchySource are the flags that say where the hierarchy is read from: a config directory
// (MeshConfig mesh.yaml and ProxyConfigs) with pod manifests, or a cluster.
type hierarchySource struct {
	configDir, kubeconfig, namespace, istioNamespace string
}

func (s *hierarchySource) register(fs interface {
	StringVar(*string, string, string, string)
	StringVarP(*string, string, string, string, string)
}) {
	fs.StringVar(&s.configDir, "config", "", "file mode: the config directory (mesh.yaml and ProxyConfigs, as `trellis control-plane --config` reads it)")
	fs.StringVar(&s.kubeconfig, "kubeconfig", "", "Kubernetes mode: read pods, namespaces, ProxyConfigs and the istio ConfigMap from this cluster")
	fs.StringVarP(&s.namespace, "namespace", "n", "", "the pod's namespace (Kubernetes mode; default: the kubeconfig's)")
	fs.StringVar(&s.istioNamespace, "istio-namespace", "istio-system", "Kubernetes mode: the namespace of the istio ConfigMap (key mesh: the MeshConfig)")
}

func (s *hierarchySource) check() error {
	switch {
	case s.configDir != "" && s.kubeconfig != "":
		return errors.New("give --config DIR or --kubeconfig PATH, not both")
	case s.configDir == "" && s.kubeconfig == "":
		return errors.New("give --config DIR (file mode) or --kubeconfig PATH (Kubernetes mode)")
	}
	return nil
}

// hierarchy is everything Resolve needs for a set of pods.
type hierarchy struct {
	mesh         *meshv1alpha1.MeshConfig
	meshFrom     string // where the MeshConfig came from, for the header
	proxyConfigs []*proxyconfig.Resource
	namespaces   map[string]*corev1.Namespace
	pods         []*corev1.Pod
	manifestPods []*corev1.Pod // file mode: the pods of -f (also in pods)
}

func (h *hierarchy) input(pod *corev1.Pod, pcs []*proxyconfig.Resource) proxyconfig.Input {
	return proxyconfig.Input{Mesh: h.mesh, RootNamespace: h.mesh.GetRootNamespace(), Namespace: h.namespaces[pod.Namespace],
		Pod: pod, ProxyConfigs: pcs}
}

// loadFiles reads a config directory and manifests: Pods, Namespaces, and Deployments,
// StatefulSets, DaemonSets and ReplicaSets (their pod template, named as the workload).
// The directory's WorkloadEntries are workloads too (local mode has no pods).
func loadFileHierarchy(dir string, manifests []string) (*hierarchy, error) {
	h := &hierarchy{mesh: model.DefaultMesh(), meshFrom: "Istio's defaults (no mesh.yaml)", namespaces: map[string]*corev1.Namespace{}}
	if dir != "" {
		cfg, _, err := config.LoadDir(dir)
		if err != nil {
			return nil, fmt.Errorf("config %s: %w", dir, err)
		}
		h.mesh, h.meshFrom = cfg.Mesh, "config directory "+dir
		h.proxyConfigs = config.ProxyConfigResources(cfg)
		for _, we := range cfg.WorkloadEntries {
			h.pods = append(h.pods, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: we.Name, Namespace: we.Namespace,
				Labels: we.Spec.GetLabels(), Annotations: we.Annotations}})
		}
	}
	for _, file := range manifests {
		objs, err := readManifests(file)
		if err != nil {
			return nil, err
		}
		for _, o := range objs {
			switch o := o.(type) {
			case *corev1.Namespace:
				h.namespaces[o.Name] = o
			case *corev1.Pod:
				h.pods = append(h.pods, o)
				h.manifestPods = append(h.manifestPods, o)
			}
		}
	}
	return h, nil
}

// readManifests decodes a multi-document YAML file of Kubernetes objects; workloads become
// the pod their template would make.
func readManifests(file string) ([]any, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var out []any
	for i := 1; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		obj, gvk, err := scheme.Codecs.UniversalDeserializer().Decode(doc, nil, nil)
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", file, i, err)
		}
		fromTemplate := func(meta metav1.ObjectMeta, t corev1.PodTemplateSpec) *corev1.Pod {
			p := &corev1.Pod{ObjectMeta: *t.ObjectMeta.DeepCopy(), Spec: t.Spec}
			p.Name, p.Namespace = meta.Name, meta.Namespace
			return p
		}
		var o any
		switch x := obj.(type) {
		case *corev1.Pod, *corev1.Namespace:
			o = x
		case *appsv1.Deployment:
			o = fromTemplate(x.ObjectMeta, x.Spec.Template)
		case *appsv1.StatefulSet:
			o = fromTemplate(x.ObjectMeta, x.Spec.Template)
		case *appsv1.DaemonSet:
			o = fromTemplate(x.ObjectMeta, x.Spec.Template)
		case *appsv1.ReplicaSet:
			o = fromTemplate(x.ObjectMeta, x.Spec.Template)
		default:
			return nil, fmt.Errorf("%s: document %d: %s: want Pods, Namespaces or workloads with a pod template", file, i, gvk.Kind)
		}
		if p, ok := o.(*corev1.Pod); ok && p.Namespace == "" {
			p.Namespace = "default"
		}
		out = append(out, o)
	}
}

// kubeClients are the clients of Kubernetes mode.
type kubeClients struct {
	kube      kubernetes.Interface
	istio     istioclient.Interface
	namespace string // the kubeconfig's namespace
}

func (s *hierarchySource) clients() (*kubeClients, error) {
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(
		&clientcmd.ClientConfigLoadingRules{ExplicitPath: s.kubeconfig}, &clientcmd.ConfigOverrides{})
	rc, err := cc.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", s.kubeconfig, err)
	}
	ns, _, err := cc.Namespace()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", s.kubeconfig, err)
	}
	k, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, err
	}
	i, err := istioclient.NewForConfig(rc)
	if err != nil {
		return nil, err
	}
	return &kubeClients{kube: k, istio: i, namespace: ns}, nil
}

// loadKubeHierarchy reads the MeshConfig, every ProxyConfig and Namespace, and the pods of
// podNamespace ("" = all namespaces; podName "" = every pod there).
func (s *hierarchySource) loadKubeHierarchy(ctx context.Context, c *kubeClients, podNamespace, podName string) (*hierarchy, error) {
	h := &hierarchy{namespaces: map[string]*corev1.Namespace{}}
	var err error
	if h.mesh, h.meshFrom, err = s.kubeMesh(ctx, c); err != nil {
		return nil, err
	}
	pcs, err := c.istio.NetworkingV1beta1().ProxyConfigs("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list ProxyConfigs (networking.istio.io/v1beta1): %w", err)
	}
	for _, pc := range pcs.Items {
		h.proxyConfigs = append(h.proxyConfigs, &proxyconfig.Resource{Name: pc.Name, Namespace: pc.Namespace,
			Created: pc.CreationTimestamp.Time, Annotations: pc.Annotations, Spec: &pc.Spec})
	}
	nss, err := c.kube.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list namespaces: %w", err)
	}
	for i := range nss.Items {
		h.namespaces[nss.Items[i].Name] = &nss.Items[i]
	}
	if podName != "" {
		pod, err := c.kube.CoreV1().Pods(podNamespace).Get(ctx, podName, metav1.GetOptions{})
		if err != nil {
			return nil, fmt.Errorf("pod %s/%s: %w", podNamespace, podName, err)
		}
		h.pods = []*corev1.Pod{pod}
		return h, nil
	}
	pods, err := c.kube.CoreV1().Pods(podNamespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list pods: %w", err)
	}
	for i := range pods.Items {
		h.pods = append(h.pods, &pods.Items[i])
	}
	sort.Slice(h.pods, func(i, j int) bool { return podKey(h.pods[i]) < podKey(h.pods[j]) })
	return h, nil
}

// kubeMesh reads the MeshConfig as istiod does: key mesh of ConfigMap istio in the istio
// namespace, over Istio's defaults.
func (s *hierarchySource) kubeMesh(ctx context.Context, c *kubeClients) (*meshv1alpha1.MeshConfig, string, error) {
	mesh := model.DefaultMesh()
	mesh.RootNamespace = s.istioNamespace // Istio: rootNamespace defaults to istiod's namespace
	cm, err := c.kube.CoreV1().ConfigMaps(s.istioNamespace).Get(ctx, "istio", metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return mesh, "Istio's defaults (no ConfigMap " + s.istioNamespace + "/istio)", nil
	}
	if err != nil {
		return nil, "", fmt.Errorf("ConfigMap %s/istio: %w", s.istioNamespace, err)
	}
	from := "ConfigMap " + s.istioNamespace + "/istio key mesh"
	js, err := yaml.YAMLToJSON([]byte(cm.Data["mesh"]))
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", from, err)
	}
	user := &meshv1alpha1.MeshConfig{}
	if len(bytes.TrimSpace(js)) > 0 && string(js) != "null" {
		if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(js, user); err != nil {
			return nil, "", fmt.Errorf("%s: %w", from, err)
		}
	}
	proto.Merge(mesh, user)
	return mesh, from, nil
}

func podKey(p *corev1.Pod) string { return p.Namespace + "/" + p.Name }
