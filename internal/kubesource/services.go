package kubesource

import (
	"cmp"
	"slices"
	"strings"

	networking "istio.io/api/networking/v1alpha3"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/trellis-mesh/trellis/internal/model"
)

// podWorkload is a Pod as the model's WorkloadEntry, or nil for a Pod that
// is not a mesh workload of its own: one without an IP yet, one on the
// host's network (its IP is the node's), or one that has ended (its IP may
// already be another Pod's).
func podWorkload(pod *corev1.Pod) *model.WorkloadEntry {
	if pod.Status.PodIP == "" || pod.Spec.HostNetwork ||
		pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return nil
	}
	return &model.WorkloadEntry{
		Meta: model.Meta{
			Kind: "Pod", Namespace: pod.Namespace, Name: pod.Name,
			Labels: pod.Labels, Annotations: pod.Annotations, Conditions: []model.Condition{{Type: model.ConditionReady, Status: podReady(pod)}},
			Source: model.Source{File: model.RegistrySource + "Pod " + pod.Namespace + "/" + pod.Name},
		},
		Spec: &networking.WorkloadEntry{
			Address:        pod.Status.PodIP,
			Labels:         pod.Labels,
			ServiceAccount: serviceAccount(pod),
		},
	}
}

// podReady is the status of the Pod's Ready condition ("False" without
// one): what decides whether a ServiceEntry selecting it sends it traffic.
func podReady(pod *corev1.Pod) string {
	status := "False"
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			status = string(c.Status)
		}
	}
	return status
}

func serviceAccount(pod *corev1.Pod) string {
	if pod.Spec.ServiceAccountName == "" {
		return "default"
	}
	return pod.Spec.ServiceAccountName
}

// serviceEntry is a Kubernetes Service as Istio's registry sees it: host
// <name>.<namespace>.svc.<domain>, its cluster IP, its TCP ports with their
// protocols, MESH_INTERNAL, STATIC, and as endpoints the ready, not
// terminating addresses of its EndpointSlices, each with its Pod's labels
// and service account, and the WorkloadEntries its selector matches.
// pods is "namespace/name" → Pod. nil for a Service
// the mesh does not route to (ExternalName, or one without a TCP port).
func serviceEntry(svc *corev1.Service, slices_ []*discoveryv1.EndpointSlice, look lookup, domain string) *model.ServiceEntry {
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		return nil
	}
	spec := &networking.ServiceEntry{
		Hosts:      []string{svc.Name + "." + svc.Namespace + ".svc." + domain},
		Location:   networking.ServiceEntry_MESH_INTERNAL,
		Resolution: networking.ServiceEntry_STATIC,
	}
	if ip := svc.Spec.ClusterIP; ip != "" && ip != corev1.ClusterIPNone {
		spec.Addresses = []string{ip}
	}
	for _, p := range svc.Spec.Ports {
		proto, ok := protocolOf(p)
		if !ok {
			continue
		}
		sp := &networking.ServicePort{Number: uint32(p.Port), Protocol: string(proto), Name: p.Name}
		if p.TargetPort.IntVal > 0 {
			sp.TargetPort = uint32(p.TargetPort.IntVal)
		}
		spec.Ports = append(spec.Ports, sp)
	}
	if len(spec.Ports) == 0 {
		return nil
	}
	spec.Endpoints = endpoints(spec.Ports, slices_, look)
	if len(svc.Spec.Selector) > 0 {
		// Istio's Services select WorkloadEntries too (VMs; its
		// PILOT_ENABLE_K8S_SELECT_WORKLOAD_ENTRIES, on by default).
		spec.WorkloadSelector = &networking.WorkloadSelector{Labels: svc.Spec.Selector}
	}
	spec.ExportTo = exportTo(svc.Annotations[exportToAnnotation])
	return &model.ServiceEntry{
		Meta: model.Meta{
			Kind: "ServiceEntry", Namespace: svc.Namespace, Name: svc.Name,
			Labels: svc.Labels, Annotations: svc.Annotations,
			Source: model.Source{File: model.RegistrySource + "Service " + svc.Namespace + "/" + svc.Name},
		},
		Spec: spec,
	}
}

// exportToAnnotation is Istio's per-Service exportTo: a comma-separated
// list with ServiceEntry exportTo's values (".", "*", "~", namespaces).
const exportToAnnotation = "networking.istio.io/exportTo"

// exportTo splits the annotation's value; nil (the mesh default) when unset.
func exportTo(v string) []string {
	var out []string
	for _, e := range strings.Split(v, ",") {
		if e = strings.TrimSpace(e); e != "" {
			out = append(out, e)
		}
	}
	return out
}

// endpoints merges a Service's EndpointSlices into one endpoint per
// address, with the port each service port (by name) reaches there.
// Istio semantics: an endpoint whose ready condition is false, or that is
// terminating, is not served.
func endpoints(ports []*networking.ServicePort, eps []*discoveryv1.EndpointSlice, look lookup) []*networking.WorkloadEntry {
	byAddr := map[string]*networking.WorkloadEntry{}
	for _, es := range eps {
		if es.AddressType == discoveryv1.AddressTypeFQDN {
			continue
		}
		// The slice's ports by name, for the service ports it serves.
		named := map[string]uint32{}
		for _, p := range es.Ports {
			if p.Port == nil || (p.Protocol != nil && *p.Protocol != corev1.ProtocolTCP) {
				continue
			}
			name := ""
			if p.Name != nil {
				name = *p.Name
			}
			named[name] = uint32(*p.Port)
		}
		for _, ep := range es.Endpoints {
			if len(ep.Addresses) == 0 || !servable(ep.Conditions) {
				continue
			}
			addr := ep.Addresses[0]
			we := byAddr[addr]
			if we == nil {
				we = &networking.WorkloadEntry{Address: addr, Ports: map[string]uint32{}}
				var pod *corev1.Pod
				if ep.TargetRef != nil && ep.TargetRef.Kind == "Pod" {
					ns := ep.TargetRef.Namespace
					if ns == "" {
						ns = es.Namespace
					}
					if pod = look.pod(ns, ep.TargetRef.Name); pod != nil {
						we.Labels = pod.Labels
						we.ServiceAccount = serviceAccount(pod)
					}
				}
				nodeName := ""
				if ep.NodeName != nil {
					nodeName = *ep.NodeName
				}
				we.Locality = locality(pod, look.node(nodeName))
				byAddr[addr] = we
			}
			for _, sp := range ports {
				if n, ok := named[sp.GetName()]; ok {
					we.Ports[sp.GetName()] = n
				}
			}
		}
	}
	out := make([]*networking.WorkloadEntry, 0, len(byAddr))
	for _, we := range byAddr {
		if len(we.Ports) > 0 {
			out = append(out, we)
		}
	}
	slices.SortFunc(out, func(a, b *networking.WorkloadEntry) int { return cmp.Compare(a.Address, b.Address) })
	return out
}

// servable is Istio's test for sending an endpoint to proxies: ready (an
// unset condition means ready), and not terminating.
func servable(c discoveryv1.EndpointConditions) bool {
	if c.Terminating != nil && *c.Terminating {
		return false
	}
	return c.Ready == nil || *c.Ready
}

// lookup finds the Pods and Nodes endpoints refer to; nil when unknown.
type lookup struct {
	pod  func(ns, name string) *corev1.Pod
	node func(name string) *corev1.Node
}

// Istio's locality labels.
const (
	localityLabel = "istio-locality" // on a Pod: region.zone.subzone, overriding its Node's
	subzoneLabel  = "topology.istio.io/subzone"
)

// locality is Istio's "region/zone/subzone" of an endpoint: the Pod's
// istio-locality label (dots for slashes), else its Node's topology labels;
// "" when neither says.
func locality(pod *corev1.Pod, node *corev1.Node) string {
	if pod != nil {
		if l := pod.Labels[localityLabel]; l != "" {
			return strings.ReplaceAll(l, ".", "/")
		}
	}
	if node == nil {
		return ""
	}
	region, zone, subzone := node.Labels[corev1.LabelTopologyRegion], node.Labels[corev1.LabelTopologyZone], node.Labels[subzoneLabel]
	if region == "" && zone == "" && subzone == "" {
		return ""
	}
	return strings.TrimRight(region+"/"+zone+"/"+subzone, "/")
}
