package kubesource

import (
	"cmp"
	"context"
	"errors"
	"maps"
	"slices"
	"strings"

	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
	coreinformers "k8s.io/client-go/informers/core/v1"
	discoveryinformers "k8s.io/client-go/informers/discovery/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/trellis-mesh/trellis/internal/config"
	"github.com/trellis-mesh/trellis/internal/model"
)

// objectSource is model.Source.File of every Istio resource read from the
// cluster.
const objectSource = model.KubernetesSource

// state turns the informers' caches into a Config. It is owned by Watch's
// goroutine: build is never called concurrently.
type state struct {
	s          *Source
	services   coreinformers.ServiceInformer
	slices     discoveryinformers.EndpointSliceInformer
	pods       coreinformers.PodInformer
	nodes      coreinformers.NodeInformer
	namespaces coreinformers.NamespaceInformer
	configMaps coreinformers.ConfigMapInformer
	istio      []cache.SharedIndexInformer
	events     *eventReporter
	status     *statusWriter

	parsed   map[string]*parsed // by "Kind ns/name"
	mesh     *parsedMesh
	reported map[string]string  // "Kind ns/name" → the problems last logged for it
	problems map[string][]error // "Kind ns/name" → its problems in the last build
	toEvent  map[string]pendingEvent
	evented  map[string]string // "Kind ns/name" → the problems this replica last recorded an Event for
	inStatus map[string]string // "Kind ns/name" → the problems its status carries (see statusWriter)
	warned   map[string]bool   // warnings logged, so each is logged once
	conv     *converted
}

// parsed is one Istio resource's latest version and what validation made
// of it: re-parsed only when its resourceVersion changes.
type parsed struct {
	uid             types.UID
	resourceVersion string
	ref             *corev1.ObjectReference
	obj             *config.Object // nil when this version is invalid (or ignored)
	err             error
	lastGood        *config.Object // served while the current version is invalid
}

type parsedMesh struct {
	resourceVersion string
	mesh            *meshv1alpha1.MeshConfig
	err             error
}

func newState(s *Source) *state {
	return &state{s: s, parsed: map[string]*parsed{}, reported: map[string]string{}, problems: map[string][]error{},
		toEvent: map[string]pendingEvent{}, evented: map[string]string{}, inStatus: map[string]string{},
		warned: map[string]bool{}, conv: newConverted()}
}

// build makes the Config the cluster holds now, and the problems of the
// resources left out of it (nil if none).
func (st *state) build() (*model.Config, error) {
	var problems []error
	clear(st.toEvent)
	clear(st.inStatus)
	mesh, err := st.meshConfig()
	if err != nil {
		problems = append(problems, err)
	}

	live := st.liveNamespaces()
	seen := map[string]bool{}
	var objects []*config.Object
	for _, inf := range st.istio {
		for _, item := range inf.GetStore().List() {
			o, ok := asIstio(item)
			if !ok || live[o.meta.Namespace] == nil {
				continue // its namespace is being deleted: it goes with it
			}
			key := o.key()
			seen[key] = true
			if o.status != nil {
				st.inStatus[key] = ourStatus(o.status).message
			}
			p := st.parse(key, o)
			switch {
			case p.obj != nil:
				objects = append(objects, p.obj)
			case p.lastGood != nil:
				objects = append(objects, p.lastGood)
			}
			if p.err != nil {
				problems = append(problems, p.err)
			}
		}
	}
	for key := range st.parsed {
		if !seen[key] {
			delete(st.parsed, key)
		}
	}

	cfg, warns, crossErrs := config.Assemble(mesh, objects)
	for _, w := range warns {
		st.warnOnce(w.String())
	}
	// Problems between resources (a host two ServiceEntries declare) are
	// reported on the resource left out, as its own problems are.
	extra := map[string][]error{}
	for _, e := range crossErrs {
		problems = append(problems, e)
		key := e.Kind + " " + e.Namespace + "/" + e.Name
		extra[key] = append(extra[key], e)
	}
	clear(st.problems)
	for key, p := range st.parsed {
		errs := extra[key]
		if p.err != nil {
			errs = append([]error{p.err}, errs...)
		}
		st.report(key, p.ref, errs)
		if len(errs) > 0 {
			st.problems[key] = errs
		}
	}
	for key := range st.reported {
		if st.parsed[key] == nil {
			delete(st.reported, key) // deleted: nothing to report on
		}
	}

	cfg.Namespaces = live
	seenServices, seenPods := map[string]bool{}, map[types.UID]bool{}
	cfg.ServiceEntries = append(st.serviceEntries(live, seenServices), cfg.ServiceEntries...)
	slices.SortStableFunc(cfg.ServiceEntries, func(a, b *model.ServiceEntry) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	cfg.Pods = st.podWorkloads(live, seenPods)
	st.conv.sweep(seenServices, seenPods)
	return cfg, errors.Join(problems...)
}

// liveNamespaces are the cluster's namespaces that are not being deleted,
// with their labels (an empty map for none): Istio drops a namespace's
// config as soon as its deletion starts, before its objects are deleted.
func (st *state) liveNamespaces() map[string]map[string]string {
	out := map[string]map[string]string{}
	for _, item := range st.namespaces.Informer().GetStore().List() {
		ns, ok := item.(*corev1.Namespace)
		if !ok || ns.DeletionTimestamp != nil || ns.Status.Phase == corev1.NamespaceTerminating {
			continue
		}
		labels := maps.Clone(ns.Labels)
		if labels == nil {
			labels = map[string]string{}
		}
		out[ns.Name] = labels
	}
	return out
}

// syncStatus writes the problems of the last build into the resources'
// status (the leader only), and clears the status of those now valid.
// Events go first, from what the statuses held before this write.
func (st *state) syncStatus(ctx context.Context) {
	if st.status == nil || !st.status.leader.IsLeader() {
		return
	}
	st.recordEvents()
	for _, inf := range st.istio {
		for _, item := range inf.GetStore().List() {
			o, ok := asIstio(item)
			if !ok {
				continue
			}
			if err := st.status.sync(ctx, o, st.problems[o.key()]); err != nil && ctx.Err() == nil {
				st.warnOnce(err.Error())
			}
		}
	}
}

// parse validates o unless this version of it was validated before.
func (st *state) parse(key string, o istioObject) *parsed {
	p := st.parsed[key]
	if p != nil && p.uid == o.meta.UID && p.resourceVersion == o.meta.ResourceVersion {
		return p
	}
	if p == nil || p.uid != o.meta.UID {
		// New, or deleted and created again: nothing of the old one serves.
		p = &parsed{uid: o.meta.UID}
		st.parsed[key] = p
	}
	p.resourceVersion = o.meta.ResourceVersion
	p.ref = &corev1.ObjectReference{Kind: o.kind, APIVersion: o.apiVersion, Namespace: o.meta.Namespace,
		Name: o.meta.Name, UID: o.meta.UID, ResourceVersion: o.meta.ResourceVersion}
	p.obj, p.err = nil, nil
	doc, err := o.document()
	if err != nil {
		p.err = err
		return p
	}
	obj, warns, err := config.ParseObject(objectSource, doc)
	for _, w := range warns {
		st.warnOnce(w.String())
	}
	if err != nil {
		p.err = err
		return p
	}
	p.obj = obj
	if obj != nil {
		p.lastGood = obj
	}
	return p
}

// report logs the problems of one resource when they differ from what was
// last logged for it, and keeps them for recordEvents.
func (st *state) report(key string, ref *corev1.ObjectReference, errs []error) {
	if len(errs) == 0 {
		delete(st.reported, key)
		return
	}
	msg := eventMessage(errs)
	if ref != nil {
		st.toEvent[key] = pendingEvent{ref: ref, msg: msg}
	}
	if st.reported[key] == msg {
		return
	}
	st.reported[key] = msg
	log := st.s.opts.Logger
	for _, e := range errs {
		log.Error("kubernetes source: resource rejected; its last good version, if any, keeps serving", "resource", key, "error", e.Error())
	}
}

// pendingEvent is a Warning Event the last build calls for.
type pendingEvent struct {
	ref *corev1.ObjectReference
	msg string
}

// recordEvents records a Warning Event on each resource whose problems
// are new since this replica last recorded one. Only the leader records,
// as only it writes status: replicas would otherwise each record the same
// Event. A replica that has just become the leader skips problems its
// predecessor already put in the resource's status, since the predecessor
// recorded their Event at the same time; problems of a resource without
// status (the mesh ConfigMap) are recorded again after a takeover.
func (st *state) recordEvents() {
	if !st.status.leader.IsLeader() {
		return
	}
	for key, ev := range st.toEvent {
		if st.evented[key] == ev.msg {
			continue
		}
		st.evented[key] = ev.msg
		if st.inStatus[key] == ev.msg {
			continue
		}
		st.events.warn(ev.ref, ReasonValidationFailed, ev.msg)
	}
	for key := range st.evented {
		if _, ok := st.toEvent[key]; !ok {
			delete(st.evented, key) // valid now: a new problem gets a new Event
		}
	}
}

// eventMessage is "field.path: reason" per problem, "; "-separated: the
// Event already names the object.
func eventMessage(errs []error) string {
	var parts []string
	for _, e := range errs {
		for _, ve := range config.ValidationErrors(e) {
			if ve.Field != "" {
				parts = append(parts, ve.Field+": "+ve.Reason)
			} else {
				parts = append(parts, ve.Reason)
			}
		}
	}
	return strings.Join(parts, "; ")
}

func (st *state) warnOnce(msg string) {
	if st.warned[msg] {
		return
	}
	st.warned[msg] = true
	st.s.opts.Logger.Warn("config: " + msg)
}

// meshConfig is the `mesh` key of the istio ConfigMap, model.DefaultMesh()
// without one; while it is invalid, its last good version.
func (st *state) meshConfig() (*meshv1alpha1.MeshConfig, error) {
	ns := st.s.opts.IstioNamespace
	cm, err := st.configMaps.Lister().ConfigMaps(ns).Get(meshConfigMap)
	if err != nil || cm.Data["mesh"] == "" {
		st.mesh = nil
		return nil, nil
	}
	if st.mesh != nil && st.mesh.resourceVersion == cm.ResourceVersion {
		return st.mesh.mesh, st.mesh.err
	}
	last := (*meshv1alpha1.MeshConfig)(nil)
	if st.mesh != nil {
		last = st.mesh.mesh
	}
	key := "ConfigMap " + ns + "/" + meshConfigMap
	m, err := config.ParseMesh("kubernetes: "+key+" (key mesh)", []byte(cm.Data["mesh"]))
	if err != nil {
		m = last
	}
	st.mesh = &parsedMesh{resourceVersion: cm.ResourceVersion, mesh: m, err: err}
	ref := &corev1.ObjectReference{Kind: "ConfigMap", APIVersion: "v1", Namespace: ns, Name: meshConfigMap, UID: cm.UID, ResourceVersion: cm.ResourceVersion}
	var errs []error
	if err != nil {
		errs = []error{err}
	}
	st.report(key, ref, errs)
	return m, err
}

// serviceEntries are the cluster's Services as ServiceEntries.
func (st *state) serviceEntries(live map[string]map[string]string, seen map[string]bool) []*model.ServiceEntry {
	byService := map[string][]*discoveryv1.EndpointSlice{}
	for _, item := range st.slices.Informer().GetStore().List() {
		es, ok := item.(*discoveryv1.EndpointSlice)
		if !ok {
			continue
		}
		if name := es.Labels[discoveryv1.LabelServiceName]; name != "" {
			byService[es.Namespace+"/"+name] = append(byService[es.Namespace+"/"+name], es)
		}
	}
	look := lookup{
		pod: func(ns, name string) *corev1.Pod {
			pod, err := st.pods.Lister().Pods(ns).Get(name)
			if err != nil {
				return nil
			}
			return pod
		},
		node: func(name string) *corev1.Node {
			if name == "" {
				return nil
			}
			node, err := st.nodes.Lister().Get(name)
			if err != nil {
				return nil
			}
			return node
		},
	}
	var out []*model.ServiceEntry
	for _, item := range st.services.Informer().GetStore().List() {
		svc, ok := item.(*corev1.Service)
		if !ok || live[svc.Namespace] == nil {
			continue
		}
		if se := st.conv.serviceEntry(svc, byService[svc.Namespace+"/"+svc.Name], look, st.s.opts.DomainSuffix, seen); se != nil {
			out = append(out, se)
		}
	}
	return out
}

// podWorkloads are the cluster's Pods as WorkloadEntries, sorted.
func (st *state) podWorkloads(live map[string]map[string]string, seen map[types.UID]bool) []*model.WorkloadEntry {
	var out []*model.WorkloadEntry
	for _, item := range st.pods.Informer().GetStore().List() {
		if pod, ok := item.(*corev1.Pod); ok && live[pod.Namespace] != nil {
			if we := st.conv.podWorkload(pod, seen); we != nil {
				out = append(out, we)
			}
		}
	}
	slices.SortFunc(out, func(a, b *model.WorkloadEntry) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	return out
}
