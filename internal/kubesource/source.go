package kubesource

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"time"

	istioclient "istio.io/client-go/pkg/clientset/versioned"
	istioinformers "istio.io/client-go/pkg/informers/externalversions"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"github.com/trellis-mesh/trellis/internal/model"
)

// Defaults for Options' zero values.
const (
	DefaultIstioNamespace = "istio-system"
	DefaultDomainSuffix   = "cluster.local"
	// DefaultDebounce is istiod's PILOT_DEBOUNCE_AFTER: a burst of changes
	// makes one config once the cluster has been quiet this long.
	DefaultDebounce = 100 * time.Millisecond
	// DefaultMaxDelay bounds how long a steady stream of changes can hold a
	// config back (istiod's PILOT_DEBOUNCE_MAX is 10 s; proxies here should
	// see an endpoint change within a second).
	DefaultMaxDelay = time.Second
)

// Options configure a Source. Config is required.
type Options struct {
	Config *rest.Config
	// IstioNamespace holds the istio ConfigMap whose `mesh` key is the
	// MeshConfig (istiod's namespace).
	IstioNamespace string
	DomainSuffix   string // cluster DNS domain of Service hosts
	Debounce       time.Duration
	MaxDelay       time.Duration
	Logger         *slog.Logger // nil means slog.Default()
	// Component names the Events' source ("trellis-controlplane" if "").
	Component string
	// ReadOnly reads the cluster without writing to it: no Events, no
	// status (trellis analyze, which, as istioctl analyze, only reports).
	ReadOnly bool
	// Elector, if set, is the leader election among replicas: only the
	// leader writes status. Nil: this is the only replica, and writes.
	Elector *Elector
}

// Source watches a cluster; see the package doc.
type Source struct {
	opts  Options
	kube  kubernetes.Interface
	istio istioclient.Interface
	dyn   dynamic.Interface
}

// New makes a Source; it does not contact the cluster until Watch.
func New(opts Options) (*Source, error) {
	if opts.Config == nil {
		return nil, errors.New("kubernetes source: a rest config is required")
	}
	if opts.IstioNamespace == "" {
		opts.IstioNamespace = DefaultIstioNamespace
	}
	if opts.DomainSuffix == "" {
		opts.DomainSuffix = DefaultDomainSuffix
	}
	if opts.Debounce == 0 {
		opts.Debounce = DefaultDebounce
	}
	if opts.MaxDelay == 0 {
		opts.MaxDelay = DefaultMaxDelay
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Component == "" {
		opts.Component = "trellis-controlplane"
	}
	kube, err := kubernetes.NewForConfig(opts.Config)
	if err != nil {
		return nil, fmt.Errorf("kubernetes source: %w", err)
	}
	ic, err := istioclient.NewForConfig(opts.Config)
	if err != nil {
		return nil, fmt.Errorf("kubernetes source: %w", err)
	}
	dyn, err := dynamic.NewForConfig(opts.Config)
	if err != nil {
		return nil, fmt.Errorf("kubernetes source: %w", err)
	}
	return &Source{opts: opts, kube: kube, istio: ic, dyn: dyn}, nil
}

// LogsProblems says that Watch logs each resource's problems itself, once
// per change of the resource, so that the caller need not log the errors
// it hands to onError after every config.
func (s *Source) LogsProblems() bool { return true }

// String names the source in logs: the API server's address.
func (s *Source) String() string { return "kubernetes " + s.opts.Config.Host }

// Watch reads the cluster, calls onConfig with the config it holds, then
// again after every change (debounced). A config is always delivered, made
// of the resources that are valid; when some are not, onError follows it
// with their problems (an errors.Join of *config.ValidationError), which
// are also logged once and recorded as Events on the resources.
//
// Callbacks run one at a time on Watch's goroutine. Watch returns nil when
// ctx is done, or an error if it cannot start (the caches never sync).
func (s *Source) Watch(ctx context.Context, onConfig func(*model.Config), onError func(error)) error {
	ctx, cancel := context.WithCancel(ctx)
	kicks := make(chan struct{}, 1)
	kick := func() {
		select {
		case kicks <- struct{}{}:
		default:
		}
	}
	handler := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { kick() },
		UpdateFunc: func(any, any) { kick() },
		DeleteFunc: func(any) { kick() },
	}

	kf := informers.NewSharedInformerFactoryWithOptions(s.kube, 0, informers.WithTransform(stripManagedFields))
	cmf := informers.NewSharedInformerFactoryWithOptions(s.kube, 0, informers.WithNamespace(s.opts.IstioNamespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.FieldSelector = "metadata.name=" + meshConfigMap }))
	isf := istioinformers.NewSharedInformerFactoryWithOptions(s.istio, 0, istioinformers.WithTransform(stripManagedFields))
	// Deferred in this order so that the informers have stopped (Shutdown
	// waits for them) before Watch returns, whatever it returns with.
	defer isf.Shutdown()
	defer cmf.Shutdown()
	defer kf.Shutdown()
	defer cancel()

	st := newState(s)
	st.services = kf.Core().V1().Services()
	st.slices = kf.Discovery().V1().EndpointSlices()
	st.pods = kf.Core().V1().Pods()
	st.nodes = kf.Core().V1().Nodes()
	st.namespaces = kf.Core().V1().Namespaces()
	st.configMaps = cmf.Core().V1().ConfigMaps()
	st.istio = s.istioInformers(isf)
	// handled: the handlers have been given every object of the first
	// list, so that what they kicked for is in the first build.
	var handled []cache.InformerSynced
	register := func(inf cache.SharedIndexInformer, h cache.ResourceEventHandler) error {
		reg, err := inf.AddEventHandler(h)
		if err != nil {
			return fmt.Errorf("kubernetes source: %w", err)
		}
		handled = append(handled, reg.HasSynced)
		return nil
	}
	for _, inf := range append([]cache.SharedIndexInformer{st.services.Informer(), st.slices.Informer(), st.configMaps.Informer()}, st.istio...) {
		if err := register(inf, handler); err != nil {
			return err
		}
	}
	// A Node's status changes often (heartbeats); only its labels matter.
	if err := register(st.nodes.Informer(), cache.ResourceEventHandlerFuncs{
		AddFunc: func(any) { kick() },
		UpdateFunc: func(o, n any) {
			a, ok1 := o.(*corev1.Node)
			b, ok2 := n.(*corev1.Node)
			if !ok1 || !ok2 || !maps.Equal(a.Labels, b.Labels) {
				kick()
			}
		},
		DeleteFunc: func(any) { kick() },
	}); err != nil {
		return err
	}
	// A Namespace matters for its labels and for being deleted.
	if err := register(st.namespaces.Informer(), cache.ResourceEventHandlerFuncs{
		AddFunc: func(any) { kick() },
		UpdateFunc: func(o, n any) {
			a, ok1 := o.(*corev1.Namespace)
			b, ok2 := n.(*corev1.Namespace)
			if !ok1 || !ok2 || !maps.Equal(a.Labels, b.Labels) || (a.DeletionTimestamp == nil) != (b.DeletionTimestamp == nil) {
				kick()
			}
		},
		DeleteFunc: func(any) { kick() },
	}); err != nil {
		return err
	}
	// A Pod's status changes often; only what the model reads matters.
	if err := register(st.pods.Informer(), cache.ResourceEventHandlerFuncs{
		AddFunc: func(any) { kick() },
		UpdateFunc: func(o, n any) {
			if podChanged(o, n) {
				kick()
			}
		},
		DeleteFunc: func(any) { kick() },
	}); err != nil {
		return err
	}

	if !s.opts.ReadOnly {
		events := newEventReporter(ctx, s.kube, s.opts.Component)
		defer events.shutdown()
		st.events = events
		st.status = &statusWriter{dyn: s.dyn, leader: s.opts.Elector}
	}
	// A new leader writes what it held back as a follower.
	s.opts.Elector.OnElected(kick)

	kf.Start(ctx.Done())
	cmf.Start(ctx.Done())
	isf.Start(ctx.Done())
	start := time.Now()
	for f, synced := range map[string]map[string]bool{"kubernetes": typed(kf.WaitForCacheSync(ctx.Done())),
		"istio ConfigMap": typed(cmf.WaitForCacheSync(ctx.Done())), "istio": typed(isf.WaitForCacheSync(ctx.Done()))} {
		for name, ok := range synced {
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("kubernetes source: %s informer %s did not sync", f, name)
			}
		}
	}
	if !cache.WaitForCacheSync(ctx.Done(), handled...) {
		return nil // only ctx ends the wait
	}
	s.opts.Logger.Info("kubernetes source synced", "server", s.opts.Config.Host, "took", time.Since(start).Round(time.Millisecond))
	// The first list's kicks are all in, and in the first build. A kick
	// after this is a change, even one made while that build is delivered.
	select {
	case <-kicks:
	default:
	}

	deliver := func() {
		cfg, err := st.build()
		onConfig(cfg)
		if err != nil {
			onError(err)
		}
		st.syncStatus(ctx) // after delivery: API writes must not delay config
	}
	deliver()

	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	var pendingSince time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-kicks:
			now := time.Now()
			if pendingSince.IsZero() {
				pendingSince = now
			}
			wait := min(s.opts.Debounce, s.opts.MaxDelay-now.Sub(pendingSince))
			timer.Reset(max(wait, 0))
		case <-timer.C:
			pendingSince = time.Time{}
			deliver()
		}
	}
}

func typed[K comparable](m map[K]bool) map[string]bool {
	out := make(map[string]bool, len(m))
	for k, v := range m {
		out[fmt.Sprint(k)] = v
	}
	return out
}

// istioInformers are the informers of the Istio kinds Trellis reads that
// the cluster serves, at v1 (every kind's storage and preferred version
// since Istio 1.22; v1beta1 and v1alpha3 objects are the same objects).
// A kind whose CRD is missing is left out with a warning rather than
// blocking the start; its CRD installed later is read after a restart.
func (s *Source) istioInformers(f istioinformers.SharedInformerFactory) []cache.SharedIndexInformer {
	want := map[string]map[string]func() cache.SharedIndexInformer{
		"networking.istio.io/v1": {
			"virtualservices":  func() cache.SharedIndexInformer { return f.Networking().V1().VirtualServices().Informer() },
			"destinationrules": func() cache.SharedIndexInformer { return f.Networking().V1().DestinationRules().Informer() },
			"serviceentries":   func() cache.SharedIndexInformer { return f.Networking().V1().ServiceEntries().Informer() },
			"workloadentries":  func() cache.SharedIndexInformer { return f.Networking().V1().WorkloadEntries().Informer() },
			"workloadgroups":   func() cache.SharedIndexInformer { return f.Networking().V1().WorkloadGroups().Informer() },
			"gateways":         func() cache.SharedIndexInformer { return f.Networking().V1().Gateways().Informer() },
			"sidecars":         func() cache.SharedIndexInformer { return f.Networking().V1().Sidecars().Informer() },
		},
		"security.istio.io/v1": {
			"peerauthentications":    func() cache.SharedIndexInformer { return f.Security().V1().PeerAuthentications().Informer() },
			"authorizationpolicies":  func() cache.SharedIndexInformer { return f.Security().V1().AuthorizationPolicies().Informer() },
			"requestauthentications": func() cache.SharedIndexInformer { return f.Security().V1().RequestAuthentications().Informer() },
		},
		"telemetry.istio.io/v1": {
			"telemetries": func() cache.SharedIndexInformer { return f.Telemetry().V1().Telemetries().Informer() },
		},
	}
	var out []cache.SharedIndexInformer
	for gv, kinds := range want {
		served := map[string]bool{}
		if list, err := s.kube.Discovery().ServerResourcesForGroupVersion(gv); err == nil {
			for _, r := range list.APIResources {
				served[r.Name] = true
			}
		}
		for resource, inf := range kinds {
			if !served[resource] {
				s.opts.Logger.Warn("kubernetes source: Istio resource not served; install Istio's CRDs and restart to read it", "resource", resource, "apiVersion", gv)
				continue
			}
			out = append(out, inf())
		}
	}
	return out
}

// meshConfigMap is Istio's ConfigMap whose `mesh` key is the MeshConfig.
const meshConfigMap = "istio"

// stripManagedFields drops what the cache would hold for nothing: every
// object's managed fields, and all of a Node or Namespace but its metadata
// (a Node's status lists every image it holds).
func stripManagedFields(obj any) (any, error) {
	switch n := obj.(type) {
	case *corev1.Node:
		obj = &corev1.Node{TypeMeta: n.TypeMeta, ObjectMeta: n.ObjectMeta}
	case *corev1.Namespace:
		obj = &corev1.Namespace{TypeMeta: n.TypeMeta, ObjectMeta: n.ObjectMeta}
	}
	if m, ok := obj.(metav1.Object); ok {
		m.SetManagedFields(nil)
	}
	return obj, nil
}

// podChanged reports whether an update changes what the model takes from
// a Pod.
func podChanged(o, n any) bool {
	a, ok1 := o.(*corev1.Pod)
	b, ok2 := n.(*corev1.Pod)
	if !ok1 || !ok2 {
		return true
	}
	return a.Status.PodIP != b.Status.PodIP || a.Status.Phase != b.Status.Phase ||
		podReady(a) != podReady(b) ||
		a.Spec.ServiceAccountName != b.Spec.ServiceAccountName || a.Spec.HostNetwork != b.Spec.HostNetwork ||
		!maps.Equal(a.Labels, b.Labels) || !maps.Equal(a.Annotations, b.Annotations)
}
