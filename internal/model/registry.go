package model

import (
	"sort"
	"strings"

	networking "istio.io/api/networking/v1alpha3"
)

// Protocol is an Istio port protocol, upper-cased ("HTTP", "TCP", ...).
type Protocol string

// IsHTTP reports whether traffic on the port is routed as HTTP.
func (p Protocol) IsHTTP() bool {
	switch p {
	case "HTTP", "HTTP2", "GRPC", "GRPC-WEB":
		return true
	}
	return false
}

// Port is one port of a Service.
type Port struct {
	Name       string
	Number     uint32
	Protocol   Protocol
	TargetPort uint32 // 0 when the ServiceEntry gives none
}

// Endpoint is one instance of a Service: an inline ServiceEntry endpoint or
// a WorkloadEntry its workloadSelector matched.
type Endpoint struct {
	Address        string
	Ports          map[string]uint32 // port name → number on this endpoint
	Labels         map[string]string
	Weight         uint32
	Locality       string
	Network        string
	ServiceAccount string
	Workload       *WorkloadEntry // nil for inline endpoints
}

// PortFor returns the endpoint port that serves the service port p, with
// Istio's precedence: the endpoint's named port, then the service's
// targetPort, then the service port itself.
func (e *Endpoint) PortFor(p *Port) uint32 {
	if n, ok := e.Ports[p.Name]; ok && n != 0 {
		return n
	}
	if p.TargetPort != 0 {
		return p.TargetPort
	}
	return p.Number
}

// Service is one host from a ServiceEntry, with its endpoints resolved.
type Service struct {
	Hostname   string
	Namespace  string
	Ports      []*Port
	Resolution networking.ServiceEntry_Resolution
	Location   networking.ServiceEntry_Location
	Endpoints  []*Endpoint
	// Unhealthy are the endpoints of selected workloads that fail their
	// health checks (WorkloadHealthy): no client is sent to them, but
	// their own proxy still serves the service, so that its inbound side
	// does not come and go with its probe.
	Unhealthy []*Endpoint
	Entry     *ServiceEntry
}

// EndpointOf returns we's endpoint of the service, healthy or not, or nil.
func (s *Service) EndpointOf(we *WorkloadEntry) *Endpoint {
	for _, list := range [][]*Endpoint{s.Endpoints, s.Unhealthy} {
		for _, ep := range list {
			if ep.Workload == we {
				return ep
			}
		}
	}
	return nil
}

// Port returns the service port with the given number, or nil.
func (s *Service) Port(number uint32) *Port {
	for _, p := range s.Ports {
		if p.Number == number {
			return p
		}
	}
	return nil
}

// Identity is the namespace and service account ep's workload runs as,
// which its SPIFFE identity names: the workload's namespace (else the
// service's) and its service account, "default" when none is given.
func (s *Service) Identity(ep *Endpoint) (namespace, serviceAccount string) {
	namespace, serviceAccount = s.Namespace, ep.ServiceAccount
	if ep.Workload != nil {
		namespace = ep.Workload.Namespace
	}
	if serviceAccount == "" {
		serviceAccount = "default"
	}
	return namespace, serviceAccount
}

// Snapshot is an immutable, indexed view of one Config. Build it once per
// config change with NewSnapshot; it is safe for concurrent reads.
type Snapshot struct {
	Config   *Config
	Services []*Service // sorted by hostname

	byHost      map[string]*Service
	workloadsBy map[workloadLabel][]*WorkloadEntry // entries by namespace and label, in Config order; NewSnapshot's only
	workloadsIP map[string]*WorkloadEntry
	podsAt      map[string]*WorkloadEntry // "namespace/ip" → Pod
	drs         drIndex

	full *Snapshot // the snapshot a View narrows; nil for a full one
	memo memoMap   // Memo's cache; used on full snapshots only
}

// NewSnapshot derives the service registry from cfg. cfg must already be
// validated; where two ServiceEntries declare the same host, the first in
// namespace/name order wins (validation reports the conflict).
func NewSnapshot(cfg *Config) *Snapshot {
	return newSnapshot(cfg, nil, nil)
}

// newSnapshot builds the snapshot of cfg; the services of the entries reuse
// does not return nil for come from it (NewSnapshotFrom).
func newSnapshot(cfg *Config, reuse func(se *ServiceEntry, host string) *Service, drs drIndex) *Snapshot {
	if cfg.Mesh == nil {
		cfg.Mesh = DefaultMesh()
	}
	s := &Snapshot{
		Config:      cfg,
		byHost:      make(map[string]*Service, len(cfg.ServiceEntries)),
		workloadsIP: make(map[string]*WorkloadEntry, len(cfg.WorkloadEntries)+len(cfg.Pods)),
		podsAt:      map[string]*WorkloadEntry{},
	}
	if reuse == nil {
		s.workloadsBy = make(map[workloadLabel][]*WorkloadEntry, 2*(len(cfg.WorkloadEntries)+len(cfg.Pods)))
	}
	for _, we := range cfg.WorkloadEntries {
		if _, dup := s.workloadsIP[we.Spec.GetAddress()]; !dup {
			s.workloadsIP[we.Spec.GetAddress()] = we
		}
		s.index(we, false)
	}
	for _, pod := range cfg.Pods {
		if _, dup := s.workloadsIP[pod.Spec.GetAddress()]; !dup {
			s.workloadsIP[pod.Spec.GetAddress()] = pod
		}
		s.podsAt[pod.Namespace+"/"+pod.Spec.GetAddress()] = pod
		s.index(pod, true)
	}
	for _, se := range cfg.ServiceEntries {
		var endpoints, unhealthy []*Endpoint
		built := false
		for _, host := range se.Spec.GetHosts() {
			if _, dup := s.byHost[host]; dup {
				continue
			}
			var svc *Service
			if reuse != nil {
				svc = reuse(se, host)
			}
			if svc == nil {
				if !built {
					endpoints, unhealthy = s.endpointsOf(se)
					built = true
				}
				svc = newService(se, host, endpoints)
				svc.Unhealthy = unhealthy
			}
			s.byHost[host] = svc
			s.Services = append(s.Services, svc)
		}
	}
	sort.Slice(s.Services, func(i, j int) bool { return s.Services[i].Hostname < s.Services[j].Hostname })
	s.workloadsBy = nil
	if drs == nil {
		drs = indexDestinationRules(cfg.DestinationRules)
	}
	s.drs = drs
	return s
}

func newService(se *ServiceEntry, host string, endpoints []*Endpoint) *Service {
	svc := &Service{
		Hostname:   host,
		Namespace:  se.Namespace,
		Resolution: se.Spec.GetResolution(),
		Location:   se.Spec.GetLocation(),
		Endpoints:  endpoints,
		Entry:      se,
	}
	for _, p := range se.Spec.GetPorts() {
		svc.Ports = append(svc.Ports, &Port{
			Name:       p.GetName(),
			Number:     p.GetNumber(),
			Protocol:   Protocol(strings.ToUpper(p.GetProtocol())),
			TargetPort: p.GetTargetPort(),
		})
	}
	return svc
}

// index files w under each of its labels, while NewSnapshot builds.
func (s *Snapshot) index(w *WorkloadEntry, pod bool) {
	if s.workloadsBy == nil {
		return
	}
	for k, v := range w.Spec.GetLabels() {
		key := workloadLabel{w.Namespace, k, v, pod}
		s.workloadsBy[key] = append(s.workloadsBy[key], w)
	}
}

func (s *Snapshot) endpointsOf(se *ServiceEntry) (out, unhealthy []*Endpoint) {
	for _, we := range se.Spec.GetEndpoints() {
		out = append(out, endpointFrom(we, s.podsAt[se.Namespace+"/"+we.GetAddress()]))
	}
	sel := se.Spec.GetWorkloadSelector().GetLabels()
	if len(sel) == 0 {
		return out, nil
	}
	// Istio: a workloadSelector selects the WorkloadEntries and Pods of the
	// ServiceEntry's own namespace, ready ones only (see WorkloadHealthy).
	// A Kubernetes Service's Pods are its inline endpoints already.
	kinds := []bool{false}
	if !se.Source.Registry() {
		kinds = append(kinds, true)
	}
	for _, pod := range kinds {
		for _, w := range s.candidates(se.Namespace, sel, pod) {
			if w.Namespace != se.Namespace || !LabelsMatch(sel, w.Spec.GetLabels()) {
				continue
			}
			if WorkloadHealthy(w) {
				out = append(out, endpointFrom(w.Spec, w))
			} else {
				unhealthy = append(unhealthy, endpointFrom(w.Spec, w))
			}
		}
	}
	return out, unhealthy
}

// candidates are the WorkloadEntries (or Pods) that may match sel in ns, in
// Config order. Every match carries each selector label, so the shortest
// indexed list of one of them holds all.
func (s *Snapshot) candidates(ns string, sel map[string]string, pod bool) []*WorkloadEntry {
	if s.workloadsBy == nil { // NewSnapshotFrom's rebuilds: scan
		if pod {
			return s.Config.Pods
		}
		return s.Config.WorkloadEntries
	}
	var out []*WorkloadEntry
	first := true
	for k, v := range sel {
		list := s.workloadsBy[workloadLabel{ns, k, v, pod}]
		if first || len(list) < len(out) {
			out, first = list, false
		}
	}
	return out
}

// workloadLabel is one label of WorkloadEntries (or Pods) in one namespace.
type workloadLabel struct {
	namespace, key, value string
	pod                   bool
}

func endpointFrom(we *networking.WorkloadEntry, owner *WorkloadEntry) *Endpoint {
	return &Endpoint{
		Address:        we.GetAddress(),
		Ports:          we.GetPorts(),
		Labels:         we.GetLabels(),
		Weight:         we.GetWeight(),
		Locality:       we.GetLocality(),
		Network:        we.GetNetwork(),
		ServiceAccount: we.GetServiceAccount(),
		Workload:       owner,
	}
}

// Service returns the service for an exact hostname, or nil.
func (s *Snapshot) Service(host string) *Service { return s.byHost[host] }

// WorkloadAt returns the WorkloadEntry whose address is ip, or nil. Proxies
// are tied to their workload this way, since the node ID carries the IP.
func (s *Snapshot) WorkloadAt(ip string) *WorkloadEntry { return s.workloadsIP[ip] }

// ServicesOf returns the services whose workloadSelector selects we, for
// building a proxy's inbound listeners.
func (s *Snapshot) ServicesOf(we *WorkloadEntry) []*Service {
	var out []*Service
	// A proxy serves its own services whatever it may see (a view's).
	for _, svc := range s.root().Services {
		if svc.EndpointOf(we) != nil {
			out = append(out, svc)
		}
	}
	return out
}

// DestinationRule returns the rule applying to host as seen from namespace
// ns, for a proxy whose labels are unknown (see DestinationRuleFor).
func (s *Snapshot) DestinationRule(host, ns string) *DestinationRule {
	return s.DestinationRuleFor(host, ns, nil)
}

// SidecarFor returns the Sidecar resource that applies to a workload in ns
// with labels, by Istio's rule: one with a matching workloadSelector first,
// then the namespace's selector-less one, then the root namespace's.
func (s *Snapshot) SidecarFor(ns string, labels map[string]string) *Sidecar {
	var nsDefault, rootDefault *Sidecar
	for _, sc := range s.Config.Sidecars {
		sel := sc.Spec.GetWorkloadSelector().GetLabels()
		switch {
		case sc.Namespace == ns && len(sel) > 0 && LabelsMatch(sel, labels):
			return sc
		case sc.Namespace == ns && len(sel) == 0 && nsDefault == nil:
			nsDefault = sc
		case sc.Namespace == s.Config.Mesh.GetRootNamespace() && len(sel) == 0 && rootDefault == nil:
			rootDefault = sc
		}
	}
	if nsDefault != nil {
		return nsDefault
	}
	return rootDefault
}

// LabelsMatch reports whether every selector label is present in labels
// with the same value. An empty selector matches everything.
func LabelsMatch(selector, labels map[string]string) bool {
	for k, v := range selector {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// DomainSuffix is the cluster DNS suffix Istio assumes for short names.
const DomainSuffix = "svc.cluster.local"

// ResolveHost expands a short host name the way Istio does for
// VirtualService and DestinationRule hosts: "reviews" in namespace
// "default" becomes "reviews.default.svc.cluster.local". Names containing a
// dot, and wildcards, are returned unchanged.
func ResolveHost(host, ns string) string {
	if host == "" || strings.Contains(host, ".") || strings.HasPrefix(host, "*") {
		return host
	}
	return host + "." + ns + "." + DomainSuffix
}
