package install

import (
	"fmt"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// ControlPlaneArgs are the container's arguments: `trellis controlplane`
// reading the cluster with its service account (the istio ConfigMap
// included, so no config volume), serving xDS, the CA and the injection
// webhook. The CA reads the cacerts Secret through the API when there is
// one, else keeps a self-signed root in istio-ca-secret, as istiod; so no
// Secret is mounted. Ports listen on all addresses of the pod, except the console,
// whose weight editor has no authentication: it stays on the pod's
// loopback, for `kubectl port-forward`.
func ControlPlaneArgs() []string {
	return []string{
		"controlplane",
		"--kubernetes",
		// The kubelet expands $(POD_NAMESPACE): the istio ConfigMap and the
		// Services the webhook's certificate names are in the pod's namespace.
		"--istio-namespace=$(POD_NAMESPACE)",
		fmt.Sprintf("--xds-address=:%d", PortXDS),
		fmt.Sprintf("--ca-address=:%d", PortCA),
		fmt.Sprintf("--debug-address=:%d", PortMonitoring),
		fmt.Sprintf("--webhook-address=:%d", PortWebhook),
		fmt.Sprintf("--ui-address=127.0.0.1:%d", PortConsole),
		"--log-level=info",
	}
}

// labels select the control plane's pods; istio: pilot as on istiod's
// pods, which Istio's tools and dashboards select on.
func labels() map[string]string {
	return map[string]string{"app": ControlPlaneName, "istio": "pilot"}
}

func meta(name, namespace string) metav1.ObjectMeta {
	return metav1.ObjectMeta{
		Name:      name,
		Namespace: namespace,
		Labels:    map[string]string{"app.kubernetes.io/name": ControlPlaneName, "app.kubernetes.io/part-of": "trellis"},
	}
}

func objects(o Options) []runtime.Object {
	return []runtime.Object{
		namespace(o),
		serviceAccount(o),
		clusterRole(o),
		clusterRoleBinding(o),
		role(o),
		roleBinding(o),
		meshConfigMap(o),
		deployment(o),
		podDisruptionBudget(o),
		service(o, ControlPlaneName),
		service(o, IstiodAlias),
		webhook(o),
	}
}

func namespace(o Options) *corev1.Namespace {
	return &corev1.Namespace{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"}, ObjectMeta: meta(o.Namespace, "")}
}

func serviceAccount(o Options) *corev1.ServiceAccount {
	return &corev1.ServiceAccount{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ServiceAccount"},
		ObjectMeta: meta(ControlPlaneName, o.Namespace),
	}
}

// istioGroups are the API groups of Istio's CRDs.
var istioGroups = []string{"networking.istio.io", "security.istio.io", "telemetry.istio.io", "extensions.istio.io"}

// clusterRole is what the control plane needs across namespaces: read the
// mesh (Services, EndpointSlices, Pods, Namespaces, Nodes for locality,
// Istio's resources), write only status and events, review tokens for the
// CA, keep its own webhook's caBundle (watched by name), and keep Istio's mesh root
// ConfigMap (istio-ca-root-cert) in every namespace, which injected proxies
// mount. No Secret is readable here, nor any other ConfigMap: the CA's
// Secrets are in the Role of its own namespace.
func clusterRole(o Options) *rbacv1.ClusterRole {
	read := []string{"get", "list", "watch"}
	return &rbacv1.ClusterRole{
		TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "ClusterRole"},
		ObjectMeta: meta(clusterScopedName(o), ""),
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"services", "pods", "namespaces", "nodes"}, Verbs: read},
			{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: read},
			{APIGroups: istioGroups, Resources: []string{"*"}, Verbs: read},
			{APIGroups: istioGroups, Resources: []string{"*/status"}, Verbs: []string{"get", "update", "patch"}},
			// Auto-registered WorkloadEntries (WorkloadGroup, Istio's VM onboarding).
			{APIGroups: []string{"networking.istio.io"}, Resources: []string{"workloadentries"}, Verbs: []string{"create", "update", "patch", "delete"}},
			{APIGroups: []string{"authentication.k8s.io"}, Resources: []string{"tokenreviews"}, Verbs: []string{"create"}},
			{APIGroups: []string{""}, Resources: []string{"events"}, Verbs: []string{"create", "patch"}},
			{APIGroups: []string{"events.k8s.io"}, Resources: []string{"events"}, Verbs: []string{"create", "patch"}},
			// create cannot be narrowed by name in RBAC; the rest can (list
			// and watch with the metadata.name field selector the writer uses).
			{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"create"}},
			{APIGroups: []string{""}, Resources: []string{"configmaps"}, ResourceNames: []string{RootCertConfigMap},
				Verbs: []string{"get", "list", "watch", "update"}},
			{APIGroups: []string{"admissionregistration.k8s.io"}, Resources: []string{"mutatingwebhookconfigurations"},
				ResourceNames: []string{WebhookName}, Verbs: []string{"get", "list", "watch", "update", "patch"}},
		},
	}
}

// clusterScopedName keeps two installs in different namespaces from
// sharing cluster-scoped RBAC objects.
func clusterScopedName(o Options) string {
	if o.Namespace == DefaultNamespace {
		return ControlPlaneName
	}
	return ControlPlaneName + "-" + o.Namespace
}

func clusterRoleBinding(o Options) *rbacv1.ClusterRoleBinding {
	return &rbacv1.ClusterRoleBinding{
		TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "ClusterRoleBinding"},
		ObjectMeta: meta(clusterScopedName(o), ""),
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: clusterScopedName(o)},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: ControlPlaneName, Namespace: o.Namespace}},
	}
}

// role is what the control plane needs in its own namespace: the CA's two
// Secrets (read; create, which RBAC cannot narrow by name, for the
// self-signed root on first start), the mesh ConfigMap, and Leases for the
// leader election that guards writes.
func role(o Options) *rbacv1.Role {
	return &rbacv1.Role{
		TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "Role"},
		ObjectMeta: meta(ControlPlaneName, o.Namespace),
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: []string{SelfSignedCASecret, CACertsSecret},
				Verbs: []string{"get", "watch"}},
			{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"create"}},
			{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"get", "list", "watch"}},
			{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: []string{"get", "list", "watch", "create", "update", "patch"}},
		},
	}
}

func roleBinding(o Options) *rbacv1.RoleBinding {
	return &rbacv1.RoleBinding{
		TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "RoleBinding"},
		ObjectMeta: meta(ControlPlaneName, o.Namespace),
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: ControlPlaneName},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: ControlPlaneName, Namespace: o.Namespace}},
	}
}

// meshConfigMap is Istio's `istio` ConfigMap: users edit MeshConfig under
// `mesh` as they do in Istio; the control plane watches it.
func meshConfigMap(o Options) *corev1.ConfigMap {
	mesh := fmt.Sprintf(`# MeshConfig (istio.io/api mesh/v1alpha1), as in Istio's istio ConfigMap.
trustDomain: %s
rootNamespace: %s
defaultConfig:
  proxyAdminPort: 15000
  statusPort: 15020
`, o.TrustDomain, o.Namespace)
	return &corev1.ConfigMap{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: meta(MeshConfigMap, o.Namespace),
		Data:       map[string]string{MeshKey: mesh},
	}
}

func containerPort(name string, port int32) corev1.ContainerPort {
	return corev1.ContainerPort{Name: name, ContainerPort: port, Protocol: corev1.ProtocolTCP}
}

func deployment(o Options) *appsv1.Deployment {
	replicas := o.Replicas
	nonRoot, noEscalation, readOnly := true, false, true
	uid := int64(1337) // Istio's proxy UID; any non-root UID works for the control plane
	maxUnavailable := intstr.FromInt32(0)
	pod := corev1.PodSpec{
		ServiceAccountName: ControlPlaneName,
		SecurityContext: &corev1.PodSecurityContext{
			RunAsNonRoot: &nonRoot, RunAsUser: &uid, RunAsGroup: &uid, FSGroup: &uid,
			SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
		Containers: []corev1.Container{{
			Name:    "controlplane",
			Image:   o.Image,
			Command: []string{"trellis"},
			Args:    ControlPlaneArgs(),
			Ports: []corev1.ContainerPort{
				containerPort("grpc-xds", PortXDS),
				containerPort("https-ca", PortCA),
				containerPort("http-monitoring", PortMonitoring),
				containerPort("https-webhook", PortWebhook),
			},
			ReadinessProbe: &corev1.Probe{
				ProbeHandler:     corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/ready", Port: intstr.FromInt32(PortMonitoring)}},
				PeriodSeconds:    3,
				TimeoutSeconds:   5,
				FailureThreshold: 3,
			},
			Resources: corev1.ResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("500m"), corev1.ResourceMemory: resource.MustParse("512Mi")},
				Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("1Gi")},
			},
			SecurityContext: &corev1.SecurityContext{
				AllowPrivilegeEscalation: &noEscalation,
				ReadOnlyRootFilesystem:   &readOnly,
				Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			},
			Env: []corev1.EnvVar{
				{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
				{Name: "POD_NAMESPACE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}},
				// The Go runtime collects harder near the container's limit
				// instead of growing the heap to twice the live data (and
				// being OOM-killed on a push burst), as istiod's chart does.
				{Name: "GOMEMLIMIT", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "limits.memory", Divisor: resource.MustParse("1")}}},
			},
			VolumeMounts: []corev1.VolumeMount{
				{Name: "tmp", MountPath: "/tmp"},
			},
		}},
		Volumes: []corev1.Volume{
			{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		},
		// Spread replicas over nodes: a node going down must not take the
		// mesh's only xDS servers with it.
		Affinity: &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{
			PreferredDuringSchedulingIgnoredDuringExecution: []corev1.WeightedPodAffinityTerm{{
				Weight: 100,
				PodAffinityTerm: corev1.PodAffinityTerm{
					LabelSelector: &metav1.LabelSelector{MatchLabels: labels()},
					TopologyKey:   "kubernetes.io/hostname",
				},
			}},
		}},
	}
	return &appsv1.Deployment{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: meta(ControlPlaneName, o.Namespace),
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels()},
			// Roll one new pod in before an old one goes: serving capacity
			// never drops during an upgrade.
			Strategy: appsv1.DeploymentStrategy{
				Type:          appsv1.RollingUpdateDeploymentStrategyType,
				RollingUpdate: &appsv1.RollingUpdateDeployment{MaxUnavailable: &maxUnavailable},
			},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{
					Labels: labels(),
					// A sidecar in front of the control plane would need the
					// control plane to start: never inject it.
					Annotations: map[string]string{"sidecar.istio.io/inject": "false"},
				},
				Spec: pod,
			},
		},
	}
}

// podDisruptionBudget keeps at least one replica serving xDS through node
// drains; with a single replica it would block every drain, so it allows
// the one to go.
func podDisruptionBudget(o Options) *policyv1.PodDisruptionBudget {
	minAvailable := intstr.FromInt32(1)
	if o.Replicas < 2 {
		minAvailable = intstr.FromInt32(0)
	}
	return &policyv1.PodDisruptionBudget{
		TypeMeta:   metav1.TypeMeta{APIVersion: "policy/v1", Kind: "PodDisruptionBudget"},
		ObjectMeta: meta(ControlPlaneName, o.Namespace),
		Spec: policyv1.PodDisruptionBudgetSpec{
			MinAvailable: &minAvailable,
			Selector:     &metav1.LabelSelector{MatchLabels: labels()},
		},
	}
}

func servicePort(name string, port, target int32) corev1.ServicePort {
	return corev1.ServicePort{Name: name, Port: port, TargetPort: intstr.FromInt32(target), Protocol: corev1.ProtocolTCP}
}

// service is the control plane's Service; the same under the name istiod,
// which Istio's tools and proxy defaults use (istiod.<ns>.svc:15012).
func service(o Options, name string) *corev1.Service {
	return &corev1.Service{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
		ObjectMeta: meta(name, o.Namespace),
		Spec: corev1.ServiceSpec{
			Selector: labels(),
			Ports: []corev1.ServicePort{
				servicePort("grpc-xds", PortXDS, PortXDS),
				servicePort("https-ca", PortCA, PortCA),
				servicePort("http-monitoring", PortMonitoring, PortMonitoring),
				servicePort("https-webhook", WebhookServicePort, PortWebhook),
			},
		},
	}
}

// webhook is Istio's default (revision-less) injection webhook pair:
//   - namespace.*: namespaces labelled istio-injection=enabled, except pods
//     labelled sidecar.istio.io/inject=false;
//   - object.*: pods labelled sidecar.istio.io/inject=true in namespaces
//     with neither istio-injection nor istio.io/rev.
//
// failurePolicy Fail as Istio: a pod that should get a sidecar is never
// created without one.
func webhook(o Options) *admissionv1.MutatingWebhookConfiguration {
	path := "/inject"
	port := int32(WebhookServicePort)
	fail := admissionv1.Fail
	none := admissionv1.SideEffectClassNone
	never := admissionv1.NeverReinvocationPolicy
	timeout := int32(10)
	equivalent := admissionv1.Equivalent
	hook := func(name string, ns, obj []metav1.LabelSelectorRequirement) admissionv1.MutatingWebhook {
		return admissionv1.MutatingWebhook{
			Name: name,
			ClientConfig: admissionv1.WebhookClientConfig{
				Service:  &admissionv1.ServiceReference{Name: ControlPlaneName, Namespace: o.Namespace, Path: &path, Port: &port},
				CABundle: o.CABundle,
			},
			Rules: []admissionv1.RuleWithOperations{{
				Operations: []admissionv1.OperationType{admissionv1.Create},
				Rule:       admissionv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}},
			}},
			FailurePolicy:           &fail,
			MatchPolicy:             &equivalent,
			SideEffects:             &none,
			ReinvocationPolicy:      &never,
			TimeoutSeconds:          &timeout,
			AdmissionReviewVersions: []string{"v1"},
			NamespaceSelector:       &metav1.LabelSelector{MatchExpressions: ns},
			ObjectSelector:          &metav1.LabelSelector{MatchExpressions: obj},
		}
	}
	req := func(key string, op metav1.LabelSelectorOperator, values ...string) metav1.LabelSelectorRequirement {
		return metav1.LabelSelectorRequirement{Key: key, Operator: op, Values: values}
	}
	return &admissionv1.MutatingWebhookConfiguration{
		TypeMeta:   metav1.TypeMeta{APIVersion: "admissionregistration.k8s.io/v1", Kind: "MutatingWebhookConfiguration"},
		ObjectMeta: meta(WebhookName, ""),
		Webhooks: []admissionv1.MutatingWebhook{
			hook("namespace.sidecar-injector.istio.io",
				[]metav1.LabelSelectorRequirement{req("istio-injection", metav1.LabelSelectorOpIn, "enabled")},
				[]metav1.LabelSelectorRequirement{req("sidecar.istio.io/inject", metav1.LabelSelectorOpNotIn, "false")}),
			hook("object.sidecar-injector.istio.io",
				[]metav1.LabelSelectorRequirement{
					req("istio-injection", metav1.LabelSelectorOpDoesNotExist),
					req("istio.io/rev", metav1.LabelSelectorOpDoesNotExist),
				},
				[]metav1.LabelSelectorRequirement{
					req("sidecar.istio.io/inject", metav1.LabelSelectorOpIn, "true"),
					req("istio.io/rev", metav1.LabelSelectorOpDoesNotExist),
				}),
		},
	}
}
