package inject

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/trellis-mesh/trellis/internal/proxy"
	"github.com/trellis-mesh/trellis/internal/proxyconfig"
)

// Container and volume names, Istio's, so `kubectl logs -c istio-proxy` works as with Istio.
const (
	InitContainer  = "istio-init"
	ProxyContainer = "istio-proxy"
	tokenVolume    = "istio-token"
	rootCertVolume = "istiod-ca-cert"
)

// Ports of the injected proxy (Istio's).
const (
	StatusPort = 15020 // /stats/prometheus, /healthz/ready
	HealthPort = 15021 // /healthz/ready: readiness and startup probes
	DNSPort    = 15053
	ProxyUID   = 1337
)

// Paths where the identity files are mounted in the proxy, Istio's.
const (
	tokenDir    = "/var/run/secrets/tokens"
	rootCertDir = "/var/run/secrets/istio"
)

// drainMargin is added to the drain duration for the pod's terminationGracePeriodSeconds, so
// the kubelet's SIGKILL comes after the proxy has drained and the app has stopped.
const drainMargin = 5 * time.Second

// Params are the mesh-wide inputs of the template: what a cluster's control plane knows and a
// pod's ProxyConfig cannot say.
type Params struct {
	ProxyImage string // trellis-proxy image; a pod's sidecar.istio.io/proxyImage wins
	// XDSAddress is the control plane's plaintext xDS address, Istio's 15010, e.g.
	// trellis.trellis-system.svc:15010.
	XDSAddress string
	// CAAddress is the CA's address, Istio's 15012 (""= no workload certificates). The proxy
	// then reads a projected service-account token (audience istio-ca) and the root from the
	// istio-ca-root-cert ConfigMap, as Istio's sidecar does.
	CAAddress   string
	TrustDomain string // "" = cluster.local
	ClusterID   string // ISTIO_META_CLUSTER_ID; "" = Kubernetes
	Network     string // ISTIO_META_NETWORK; "" = unset
	Revision    string // recorded in the status annotation; "" = default
	// NativeSidecars makes the proxy a Kubernetes native sidecar (an init container with
	// restartPolicy Always, 1.29+): it starts before the app, stops after it, and does not keep
	// Jobs from completing.
	NativeSidecars bool
}

// status is the sidecar.istio.io/status annotation: what was added, so tools (and a second
// injection) can tell.
type status struct {
	InitContainers   []string `json:"initContainers"`
	Containers       []string `json:"containers"`
	Volumes          []string `json:"volumes"`
	ImagePullSecrets []string `json:"imagePullSecrets"`
	Revision         string   `json:"revision"`
}

// Inject returns a copy of pod with the sidecar added, configured from eff, and warnings for
// settings the proxy cannot honour. workload names the pod's owner (a Deployment's name) for
// the canonical-name label; "" derives it from the pod. A pod Injected already is returned
// unchanged, so injecting twice gives the same spec.
func Inject(pod *corev1.Pod, workload string, eff *proxyconfig.Effective, p Params) (*corev1.Pod, []string, error) {
	out := pod.DeepCopy()
	if Injected(pod) {
		return out, nil, nil
	}
	var warnings []string
	image := p.ProxyImage
	if eff.Image.V != "" {
		image = eff.Image.V
	}
	if image == "" {
		return nil, nil, fmt.Errorf("no proxy image: set the injector's proxy image or the sidecar.istio.io/proxyImage annotation")
	}
	initRes, err := resources(eff.InitCPU, eff.InitCPULimit, eff.InitMemory, eff.InitMemoryLimit)
	if err != nil {
		return nil, nil, err
	}
	proxyRes, err := resources(eff.ProxyCPU, eff.ProxyCPULimit, eff.ProxyMemory, eff.ProxyMemoryLimit)
	if err != nil {
		return nil, nil, err
	}
	initC := initContainer(image, eff, initRes)
	components, dropped := knownComponents(eff.ComponentLogLevel.V)
	if len(dropped) > 0 && eff.ComponentLogLevel.From.Level != proxyconfig.LevelDefault {
		warnings = append(warnings, fmt.Sprintf("component log levels for %v (%s) ignored: trellis-proxy's loggers are %v",
			dropped, eff.ComponentLogLevel.From.Setter, proxy.LogComponents))
	}
	sidecar := proxyContainer(image, out, eff, components, p, proxyRes)
	app := ""
	if len(out.Spec.Containers) > 0 {
		app = out.Spec.Containers[0].Name
	}
	if p.NativeSidecars {
		always := corev1.ContainerRestartPolicyAlways
		sidecar.RestartPolicy = &always
		// The kubelet starts the next init container, and the app, only once this probe passes.
		sidecar.StartupProbe = &corev1.Probe{
			ProbeHandler:     healthProbe(),
			PeriodSeconds:    1,
			TimeoutSeconds:   3,
			FailureThreshold: 600,
		}
		out.Spec.InitContainers = append([]corev1.Container{initC, sidecar}, out.Spec.InitContainers...)
	} else {
		if eff.HoldApplicationUntilProxyStarts.V {
			// The kubelet runs the next container only after this hook returns.
			sidecar.Lifecycle = &corev1.Lifecycle{PostStart: &corev1.LifecycleHandler{
				Exec: &corev1.ExecAction{Command: []string{"trellis-proxy", "wait"}},
			}}
		}
		out.Spec.InitContainers = append([]corev1.Container{initC}, out.Spec.InitContainers...)
		out.Spec.Containers = append([]corev1.Container{sidecar}, out.Spec.Containers...)
	}
	if p.CAAddress != "" {
		out.Spec.Volumes = append(out.Spec.Volumes, identityVolumes()...)
	}
	grace := int64((eff.TerminationDrainDuration.V + drainMargin + time.Second - 1) / time.Second)
	cur := int64(corev1.DefaultTerminationGracePeriodSeconds)
	if out.Spec.TerminationGracePeriodSeconds != nil {
		cur = *out.Spec.TerminationGracePeriodSeconds
	}
	if cur < grace {
		out.Spec.TerminationGracePeriodSeconds = &grace
	}
	setMeta(out, workload, app, p)
	return out, warnings, nil
}

// initContainer runs `trellis-proxy iptables` with istio-iptables' flags. It needs root and
// NET_ADMIN/NET_RAW only for this; the proxy itself runs without capabilities.
func initContainer(image string, eff *proxyconfig.Effective, res corev1.ResourceRequirements) corev1.Container {
	args := []string{
		"iptables",
		"--envoy-port=15001", "--inbound-capture-port=15006",
		"--proxy-uid=" + strconv.Itoa(ProxyUID), "--proxy-gid=" + strconv.Itoa(ProxyUID),
		"--inbound-ports=" + eff.IncludeInboundPorts.V,
		"--local-exclude-ports=" + eff.ExcludeInboundPorts.V,
		"--outbound-ip-ranges=" + eff.IncludeOutboundIPRanges.V,
		"--outbound-ip-ranges-exclude=" + eff.ExcludeOutboundIPRanges.V,
		"--local-exclude-ports-outbound=" + eff.ExcludeOutboundPorts.V,
	}
	if eff.IncludeOutboundPorts.V != "" {
		// Istio passes -q only when the list is set.
		args = append(args, "--include-outbound-ports="+eff.IncludeOutboundPorts.V)
	}
	if eff.DNSCapture.V {
		args = append(args, "--redirect-dns")
	}
	root, no, yes := int64(0), false, true
	return corev1.Container{
		Name:            InitContainer,
		Image:           image,
		Command:         []string{"trellis-proxy"},
		Args:            args,
		Resources:       res,
		ImagePullPolicy: corev1.PullIfNotPresent,
		SecurityContext: &corev1.SecurityContext{
			RunAsUser: &root, RunAsGroup: &root, RunAsNonRoot: &no,
			AllowPrivilegeEscalation: &no, Privileged: &no, ReadOnlyRootFilesystem: &yes,
			Capabilities: &corev1.Capabilities{
				Add:  []corev1.Capability{"NET_ADMIN", "NET_RAW"},
				Drop: []corev1.Capability{"ALL"},
			},
		},
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
	}
}

// proxyContainer runs trellis-proxy as UID/GID 1337, the identity the iptables rules exempt.
// $(VAR) in args are expanded by the kubelet from the container's env.
func proxyContainer(image string, pod *corev1.Pod, eff *proxyconfig.Effective, components string, p Params, res corev1.ResourceRequirements) corev1.Container {
	trustDomain := p.TrustDomain
	if trustDomain == "" {
		trustDomain = "cluster.local"
	}
	args := []string{
		"--node-id=sidecar~$(INSTANCE_IP)~$(POD_NAME).$(POD_NAMESPACE)~$(POD_NAMESPACE).svc." + trustDomain,
		"--xds-address=" + p.XDSAddress,
		"--status-address=0.0.0.0:" + strconv.Itoa(StatusPort),
		"--health-address=0.0.0.0:" + strconv.Itoa(HealthPort),
		"--log-level=" + eff.LogLevel.V,
		"--component-log-level=" + components,
		"--drain-duration=" + eff.TerminationDrainDuration.V.String(),
		"--metadata=INTERCEPTION_MODE=REDIRECT",
	}
	if eff.DNSCapture.V {
		args = append(args, "--dns-address=127.0.0.1:"+strconv.Itoa(DNSPort))
	}
	for _, k := range slices.Sorted(maps.Keys(pod.Labels)) {
		args = append(args, "--label="+k+"="+pod.Labels[k])
	}
	var mounts []corev1.VolumeMount
	if p.CAAddress != "" {
		args = append(args, "--ca-address="+p.CAAddress,
			"--ca-root-cert="+rootCertDir+"/root-cert.pem",
			"--token-file="+tokenDir+"/istio-token")
		mounts = []corev1.VolumeMount{
			{Name: tokenVolume, MountPath: tokenDir, ReadOnly: true},
			{Name: rootCertVolume, MountPath: rootCertDir, ReadOnly: true},
		}
	}
	env := []corev1.EnvVar{
		fieldEnv("POD_NAME", "metadata.name"),
		fieldEnv("POD_NAMESPACE", "metadata.namespace"),
		fieldEnv("INSTANCE_IP", "status.podIP"),
		fieldEnv("SERVICE_ACCOUNT", "spec.serviceAccountName"),
		{Name: "TRUST_DOMAIN", Value: trustDomain},
		{Name: "TERMINATION_DRAIN_DURATION", Value: eff.TerminationDrainDuration.V.String()},
		// The proxy's workers are Go's: Istio's concurrency becomes GOMAXPROCS.
		{Name: "GOMAXPROCS", Value: strconv.Itoa(max(eff.Concurrency.V, 1))},
	}
	if p.ClusterID != "" {
		env = append(env, corev1.EnvVar{Name: "ISTIO_META_CLUSTER_ID", Value: p.ClusterID})
	}
	if p.Network != "" {
		env = append(env, corev1.EnvVar{Name: "ISTIO_META_NETWORK", Value: p.Network})
	}
	for _, k := range slices.Sorted(maps.Keys(eff.EnvironmentVariables.V)) {
		env = append(env, corev1.EnvVar{Name: k, Value: eff.EnvironmentVariables.V[k]})
	}
	uid, no, yes := int64(ProxyUID), false, true
	return corev1.Container{
		Name:            ProxyContainer,
		Image:           image,
		Command:         []string{"trellis-proxy"},
		Args:            args,
		Env:             env,
		Resources:       res,
		ImagePullPolicy: corev1.PullIfNotPresent,
		Ports: []corev1.ContainerPort{
			{Name: "http-status", ContainerPort: StatusPort, Protocol: corev1.ProtocolTCP},
			{Name: "http-health", ContainerPort: HealthPort, Protocol: corev1.ProtocolTCP},
		},
		ReadinessProbe: &corev1.Probe{
			ProbeHandler:     healthProbe(),
			PeriodSeconds:    15,
			TimeoutSeconds:   3,
			FailureThreshold: 4,
		},
		VolumeMounts: mounts,
		SecurityContext: &corev1.SecurityContext{
			RunAsUser: &uid, RunAsGroup: &uid, RunAsNonRoot: &yes,
			AllowPrivilegeEscalation: &no, Privileged: &no, ReadOnlyRootFilesystem: &yes,
			Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		},
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
	}
}

// knownComponents keeps the "name:level" entries trellis-proxy has a logger for: Envoy has
// more (Istio's default names "misc"), and the proxy refuses to start on an unknown one.
func knownComponents(list string) (kept string, dropped []string) {
	var keep []string
	for _, entry := range strings.Split(list, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		name, _, _ := strings.Cut(entry, ":")
		if slices.Contains(proxy.LogComponents, strings.TrimSpace(name)) {
			keep = append(keep, entry)
		} else {
			dropped = append(dropped, name)
		}
	}
	return strings.Join(keep, ","), dropped
}

func healthProbe() corev1.ProbeHandler {
	return corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
		Path: "/healthz/ready", Port: intstr.FromInt32(HealthPort), Scheme: corev1.URISchemeHTTP,
	}}
}

func fieldEnv(name, path string) corev1.EnvVar {
	return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{
		FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: path},
	}}
}

// identityVolumes are Istio's: a service-account token for the CA's audience, and the mesh
// root from the istio-ca-root-cert ConfigMap.
func identityVolumes() []corev1.Volume {
	expiry := int64(43200)
	return []corev1.Volume{
		{Name: tokenVolume, VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
			Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{
				Audience: "istio-ca", ExpirationSeconds: &expiry, Path: "istio-token",
			}}},
		}}},
		{Name: rootCertVolume, VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: "istio-ca-root-cert"},
		}}},
	}
}

// resources turns the effective quantities ("" = unset) into requests and limits.
func resources(cpu, cpuLimit, mem, memLimit proxyconfig.Value[string]) (corev1.ResourceRequirements, error) {
	var r corev1.ResourceRequirements
	for _, q := range []struct {
		v    proxyconfig.Value[string]
		into *corev1.ResourceList
		name corev1.ResourceName
	}{
		{cpu, &r.Requests, corev1.ResourceCPU}, {mem, &r.Requests, corev1.ResourceMemory},
		{cpuLimit, &r.Limits, corev1.ResourceCPU}, {memLimit, &r.Limits, corev1.ResourceMemory},
	} {
		if q.v.V == "" {
			continue
		}
		parsed, err := resource.ParseQuantity(q.v.V)
		if err != nil {
			return r, fmt.Errorf("%s: %q: %w", q.v.From.Setter, q.v.V, err)
		}
		if *q.into == nil {
			*q.into = corev1.ResourceList{}
		}
		(*q.into)[q.name] = parsed
	}
	return r, nil
}

// setMeta adds Istio's labels and annotations: the status (what was added), the tls mode peers
// use to pick mTLS, the canonical service for telemetry, and the Prometheus scrape hints
// (unless the pod has its own).
func setMeta(pod *corev1.Pod, workload, app string, p Params) {
	if pod.Labels == nil {
		pod.Labels = map[string]string{}
	}
	if pod.Annotations == nil {
		pod.Annotations = map[string]string{}
	}
	pod.Labels["security.istio.io/tlsMode"] = "istio"
	if _, ok := pod.Labels["service.istio.io/canonical-name"]; !ok {
		pod.Labels["service.istio.io/canonical-name"] = canonicalName(pod, workload)
	}
	if _, ok := pod.Labels["service.istio.io/canonical-revision"]; !ok {
		pod.Labels["service.istio.io/canonical-revision"] = firstLabel(pod.Labels, "latest", "app.kubernetes.io/version", "version")
	}
	st := status{
		InitContainers: []string{InitContainer},
		Containers:     []string{ProxyContainer},
		Revision:       p.Revision,
	}
	if p.NativeSidecars {
		st.InitContainers = []string{InitContainer, ProxyContainer}
		st.Containers = nil
	}
	if p.CAAddress != "" {
		st.Volumes = []string{tokenVolume, rootCertVolume}
	}
	if st.Revision == "" {
		st.Revision = "default"
	}
	b, _ := json.Marshal(st) // plain strings: cannot fail
	pod.Annotations[StatusKey] = string(b)
	if _, ok := pod.Annotations["prometheus.io/scrape"]; !ok {
		pod.Annotations["prometheus.io/scrape"] = "true"
		pod.Annotations["prometheus.io/port"] = strconv.Itoa(StatusPort)
		pod.Annotations["prometheus.io/path"] = "/stats/prometheus"
	}
	if _, ok := pod.Annotations["kubectl.kubernetes.io/default-container"]; !ok && app != "" {
		pod.Annotations["kubectl.kubernetes.io/default-container"] = app
	}
}

// canonicalName is Istio's: the canonical-name label, app.kubernetes.io/name, app, else the
// workload's name.
func canonicalName(pod *corev1.Pod, workload string) string {
	if workload == "" {
		workload = WorkloadName(pod)
	}
	return firstLabel(pod.Labels, workload, "app.kubernetes.io/name", "app")
}

func firstLabel(labels map[string]string, def string, keys ...string) string {
	for _, k := range keys {
		if v := labels[k]; v != "" {
			return v
		}
	}
	return def
}

// WorkloadName derives the pod's workload from its owner, as Istio does: a ReplicaSet owner
// with the pod-template-hash suffix is a Deployment; otherwise the owner's name, else the pod's
// name or generateName.
func WorkloadName(pod *corev1.Pod) string {
	for _, o := range pod.OwnerReferences {
		if o.Controller == nil || !*o.Controller {
			continue
		}
		if hash := pod.Labels["pod-template-hash"]; o.Kind == "ReplicaSet" && hash != "" {
			return strings.TrimSuffix(o.Name, "-"+hash)
		}
		return o.Name
	}
	if pod.Name != "" {
		return pod.Name
	}
	return strings.TrimSuffix(pod.GenerateName, "-")
}

// DefaultProxyImage is the proxy image when neither the injector nor the pod names one.
const DefaultProxyImage = "ghcr.io/trellis-mesh/trellis-proxy:latest"

// DefaultParams are Istio's addresses for a control plane installed as Service istiod in
// istio-system (xDS 15010, CA 15012), native sidecars on.
func DefaultParams() Params {
	return Params{
		ProxyImage:     DefaultProxyImage,
		XDSAddress:     "istiod.istio-system.svc:15010",
		CAAddress:      "istiod.istio-system.svc:15012",
		TrustDomain:    "cluster.local",
		NativeSidecars: true,
	}
}
