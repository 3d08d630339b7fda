package main

import (
	"encoding/json"
	"fmt"
	"maps"
	"strings"

	"github.com/trellis-mesh/trellis/internal/proxy/apphealth"
)

// Istio's agent builds part of the node from its environment (pkg/bootstrap GetNodeMetaData), and a
// VM's cluster.env, as istioctl writes it for a WorkloadGroup, relies on that. trellis-proxy reads
// the same variables here, in the command only: proxy.Run never looks at the environment, so
// `trellis up`, which runs its proxies in-process, is not affected by its own.

// istioMetaPrefix marks a variable whose name (less the prefix) and value become node metadata.
const istioMetaPrefix = "ISTIO_META_"

// envMetadataKeys are the other variables the agent turns into metadata, and their keys.
var envMetadataKeys = []struct{ env, key string }{
	{"POD_NAME", "NAME"},
	{"POD_NAMESPACE", "NAMESPACE"},
	{"INSTANCE_IP", "INSTANCE_IPS"},
	{"SERVICE_ACCOUNT", "SERVICE_ACCOUNT"},
}

// metadataFromEnv is the node metadata in environ ("KEY=value" entries, as os.Environ): every
// ISTIO_META_<KEY>=v as <KEY>, then POD_NAME, POD_NAMESPACE, INSTANCE_IP and SERVICE_ACCOUNT as
// NAME, NAMESPACE, INSTANCE_IPS and SERVICE_ACCOUNT, which win over an ISTIO_META_ of the same key as
// in the agent. Empty values of those four are ignored (a pod IP not known yet is no address).
func metadataFromEnv(environ []string) map[string]string {
	md := map[string]string{}
	for _, kv := range environ {
		name, v, ok := strings.Cut(kv, "=")
		key, meta := strings.CutPrefix(name, istioMetaPrefix)
		if _, seen := md[key]; ok && meta && key != "" && !seen {
			md[key] = v
		}
	}
	for _, e := range envMetadataKeys {
		if v := lookup(environ, e.env); v != "" {
			md[e.key] = v
		}
	}
	return md
}

// labelsFromEnv is ISTIO_METAJSON_LABELS, the workload's labels as a JSON object (istioctl's
// cluster.env carries the WorkloadGroup's labels there); nil when unset.
func labelsFromEnv(environ []string) (map[string]string, error) {
	v := lookup(environ, "ISTIO_METAJSON_LABELS")
	if strings.TrimSpace(v) == "" {
		return nil, nil
	}
	var labels map[string]string
	if err := json.Unmarshal([]byte(v), &labels); err != nil {
		return nil, fmt.Errorf("$ISTIO_METAJSON_LABELS: want a JSON object of strings, e.g. {\"app\":\"reviews\"}: %w", err)
	}
	return labels, nil
}

// proxyConfigFromEnv is PROXY_CONFIG, Istio's ProxyConfig for this proxy in YAML or JSON (a VM's
// cluster.env carries its WorkloadGroup's probe there); nil when unset or blank.
func proxyConfigFromEnv(environ []string) (*apphealth.ProxyConfig, error) {
	v := lookup(environ, "PROXY_CONFIG")
	if strings.TrimSpace(v) == "" {
		return nil, nil
	}
	pc, err := apphealth.ParseProxyConfig([]byte(v))
	if err != nil {
		return nil, fmt.Errorf("$PROXY_CONFIG: %w", err)
	}
	return pc, nil
}

// overlay is base with over's entries laid on top: a flag given on the command line wins over the
// environment.
func overlay(base, over map[string]string) map[string]string {
	out := maps.Clone(base)
	if out == nil {
		out = make(map[string]string, len(over))
	}
	maps.Copy(out, over)
	return out
}

// lookup is the value of name in environ; of duplicate entries the first wins, as for os.Getenv.
func lookup(environ []string, name string) string {
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok && k == name {
			return v
		}
	}
	return ""
}
