package kubesource

import (
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/trellis-mesh/trellis/internal/model"
)

// Services and Pods are converted again only when something the conversion
// reads has a new resourceVersion; otherwise the next Config holds the very
// same object. An endpoint change then leaves every other ServiceEntry and
// Pod equal by pointer, which is how model.EndpointDelta recognises them
// first: compared by value, the 1000 unchanged ones cost it 17 ms per
// change. Like state, owned by Watch's goroutine.
type converted struct {
	services map[string]convertedService // by "namespace/name"
	pods     map[types.UID]convertedPod
}

type convertedService struct {
	inputs string // the versions of everything serviceEntry read
	se     *model.ServiceEntry
}

type convertedPod struct {
	resourceVersion string
	we              *model.WorkloadEntry
}

func newConverted() *converted {
	return &converted{services: map[string]convertedService{}, pods: map[types.UID]convertedPod{}}
}

// serviceEntry is serviceEntry(svc, eps, look, domain), reused while its
// inputs are unchanged. Keys not asked for since the last sweep are
// dropped by sweep.
func (c *converted) serviceEntry(svc *corev1.Service, eps []*discoveryv1.EndpointSlice, look lookup, domain string, seen map[string]bool) *model.ServiceEntry {
	key := svc.Namespace + "/" + svc.Name
	seen[key] = true
	in := serviceInputs(svc, eps, look, domain)
	if prev, ok := c.services[key]; ok && prev.inputs == in {
		return prev.se
	}
	se := serviceEntry(svc, eps, look, domain)
	c.services[key] = convertedService{inputs: in, se: se}
	return se
}

// serviceInputs names the version of everything serviceEntry reads: the
// Service, its EndpointSlices, and the Pods and Nodes their endpoints
// point at ("-" for one not found).
func serviceInputs(svc *corev1.Service, eps []*discoveryv1.EndpointSlice, look lookup, domain string) string {
	var b strings.Builder
	b.WriteString(domain + "|" + string(svc.UID) + "@" + svc.ResourceVersion)
	sorted := slices.Clone(eps)
	slices.SortFunc(sorted, func(x, y *discoveryv1.EndpointSlice) int { return strings.Compare(x.Name, y.Name) })
	for _, es := range sorted {
		b.WriteString("|" + es.Name + "@" + es.ResourceVersion)
		for _, ep := range es.Endpoints {
			if ep.TargetRef != nil && ep.TargetRef.Kind == "Pod" {
				ns := ep.TargetRef.Namespace
				if ns == "" {
					ns = es.Namespace
				}
				b.WriteString(",p:" + ns + "/" + ep.TargetRef.Name + "@")
				if pod := look.pod(ns, ep.TargetRef.Name); pod != nil {
					b.WriteString(string(pod.UID) + "@" + pod.ResourceVersion)
				} else {
					b.WriteString("-")
				}
			}
			if ep.NodeName != nil && *ep.NodeName != "" {
				b.WriteString(",n:" + *ep.NodeName + "@")
				if node := look.node(*ep.NodeName); node != nil {
					b.WriteString(node.ResourceVersion)
				} else {
					b.WriteString("-")
				}
			}
		}
	}
	return b.String()
}

// podWorkload is podWorkload(pod), reused while the Pod is unchanged.
func (c *converted) podWorkload(pod *corev1.Pod, seen map[types.UID]bool) *model.WorkloadEntry {
	seen[pod.UID] = true
	if prev, ok := c.pods[pod.UID]; ok && prev.resourceVersion == pod.ResourceVersion {
		return prev.we
	}
	we := podWorkload(pod)
	c.pods[pod.UID] = convertedPod{resourceVersion: pod.ResourceVersion, we: we}
	return we
}

// sweep forgets what was not converted in the last build: deleted objects.
func (c *converted) sweep(services map[string]bool, pods map[types.UID]bool) {
	for k := range c.services {
		if !services[k] {
			delete(c.services, k)
		}
	}
	for k := range c.pods {
		if !pods[k] {
			delete(c.pods, k)
		}
	}
}
