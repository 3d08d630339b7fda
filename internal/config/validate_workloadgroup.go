package config

import (
	"regexp"
	"strings"

	networking "istio.io/api/networking/v1alpha3"
)

// validateWorkloadGroup checks a WorkloadGroup with Istio's rules: a
// template is required and is a WorkloadEntry without an address (each
// registered workload brings its own), metadata labels and annotations are
// Kubernetes labels and annotation keys, and a probe has exactly one
// check and no negative timing.
func validateWorkloadGroup(c *checker, wg *networking.WorkloadGroup) {
	if md := wg.GetMetadata(); md != nil {
		validateLabels(c, "spec.metadata.labels", md.GetLabels())
		for _, k := range sortedKeys(md.GetAnnotations()) {
			if !isQualifiedName(k) {
				c.errorf("spec.metadata.annotations["+k+"]", "%q is not a valid annotation key: [prefix/]name, name at most 63 letters, digits, '-', '_' or '.'", k)
			}
		}
	}
	switch t := wg.GetTemplate(); {
	case t == nil:
		c.errorf("spec.template", "required")
	default:
		if t.GetAddress() != "" {
			c.errorf("spec.template.address", "must be empty: each workload registers with its own address")
		}
		// The rest are a WorkloadEntry's rules; an address stands in for the
		// one a workload brings.
		validateWorkloadEntry(c, "spec.template", withAddress(t, "0.0.0.0"), false)
		validateLabels(c, "spec.template.labels", t.GetLabels())
	}
	if p := wg.GetProbe(); p != nil {
		validateReadinessProbe(c, "spec.probe", p)
	}
}

// withAddress is a copy of we with its address replaced.
func withAddress(we *networking.WorkloadEntry, addr string) *networking.WorkloadEntry {
	return &networking.WorkloadEntry{Address: addr, Ports: we.GetPorts(), ServiceAccount: we.GetServiceAccount()}
}

func validateReadinessProbe(c *checker, path string, p *networking.ReadinessProbe) {
	for _, f := range []struct {
		name string
		v    int32
	}{{"initialDelaySeconds", p.GetInitialDelaySeconds()}, {"timeoutSeconds", p.GetTimeoutSeconds()},
		{"periodSeconds", p.GetPeriodSeconds()}, {"successThreshold", p.GetSuccessThreshold()},
		{"failureThreshold", p.GetFailureThreshold()}} {
		if f.v < 0 {
			c.errorf(path+"."+f.name, "must not be negative, got %d", f.v)
		}
	}
	switch m := p.GetHealthCheckMethod().(type) {
	case *networking.ReadinessProbe_HttpGet:
		if n := m.HttpGet.GetPort(); !validPort(n) {
			c.errorf(path+".httpGet.port", "must be between 1 and 65535, got %d", n)
		}
		if s := m.HttpGet.GetScheme(); s != "" && !strings.EqualFold(s, "http") && !strings.EqualFold(s, "https") {
			c.errorf(path+".httpGet.scheme", "%q: want HTTP or HTTPS", s)
		}
	case *networking.ReadinessProbe_TcpSocket:
		if n := m.TcpSocket.GetPort(); !validPort(n) {
			c.errorf(path+".tcpSocket.port", "must be between 1 and 65535, got %d", n)
		}
	case *networking.ReadinessProbe_Grpc:
		if n := m.Grpc.GetPort(); !validPort(n) {
			c.errorf(path+".grpc.port", "must be between 1 and 65535, got %d", n)
		}
	case *networking.ReadinessProbe_Exec:
		if len(m.Exec.GetCommand()) == 0 {
			c.errorf(path+".exec.command", "required")
		}
	default:
		c.errorf(path, "one of httpGet, tcpSocket, exec or grpc is required")
	}
}

var (
	labelNameRE  = regexp.MustCompile(`^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$`)
	labelValueRE = regexp.MustCompile(`^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$`)
)

// isQualifiedName is a Kubernetes label or annotation key: an optional
// DNS subdomain prefix and '/', then a name of at most 63 characters.
func isQualifiedName(k string) bool {
	name := k
	if i := strings.LastIndexByte(k, '/'); i >= 0 {
		if !isDNS1123Subdomain(k[:i]) {
			return false
		}
		name = k[i+1:]
	}
	return len(name) <= 63 && labelNameRE.MatchString(name)
}

func validateLabels(c *checker, path string, labels map[string]string) {
	for _, k := range sortedKeys(labels) {
		if !isQualifiedName(k) {
			c.errorf(path+"["+k+"]", "%q is not a valid label key: [prefix/]name, name at most 63 letters, digits, '-', '_' or '.'", k)
		}
		if v := labels[k]; len(v) > 63 || !labelValueRE.MatchString(v) {
			c.errorf(path+"["+k+"]", "%q is not a valid label value: at most 63 letters, digits, '-', '_' or '.'", v)
		}
	}
}
