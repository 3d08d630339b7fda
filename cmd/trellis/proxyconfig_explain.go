package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"

	"github.com/trellis-mesh/trellis/internal/proxyconfig"
)

func newProxyConfigExplainCmd(f *proxyConfigFlags) *cobra.Command {
	var src hierarchySource
	var manifests []string
	cmd := &cobra.Command{
		Use:   "explain [pod]",
		Short: "Show a pod's effective sidecar settings, which level of the ProxyConfig hierarchy set each, and conflicts",
		Long: "Resolves Istio's ProxyConfig hierarchy for one pod: its annotations, then a ProxyConfig\n" +
			"selecting it, then its namespace's ProxyConfig, then the mesh-wide one (root namespace),\n" +
			"then MeshConfig defaultConfig, then the defaults. Every value is printed with its level\n" +
			"and the exact resource and field that set it. All of them are written into the pod at\n" +
			"injection, so changing one needs the pod re-created.\n\n" +
			"File mode: --config DIR (mesh.yaml and ProxyConfigs) and -f with the pod (or a\n" +
			"Deployment) and optionally its Namespace; the directory's WorkloadEntries can be named too.\n" +
			"Kubernetes mode: explain POD -n NS --kubeconfig PATH.",
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if f.output != "short" && f.output != "json" {
				return fmt.Errorf("--output %q: want short or json", f.output)
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), f.timeout)
			defer cancel()
			h, pod, err := explainTarget(ctx, &src, manifests, args)
			if err != nil {
				return err
			}
			e, conflicts, err := proxyconfig.Resolve(h.input(pod, h.proxyConfigs))
			if err != nil {
				return fmt.Errorf("pod %s cannot be injected: its settings are invalid:\n%w", podKey(pod), err)
			}
			if f.output == "json" {
				return writeJSON(cmd.OutOrStdout(), explainJSON(pod, h, e, conflicts))
			}
			printExplain(cmd.OutOrStdout(), pod, h, e, conflicts)
			return nil
		},
	}
	src.register(cmd.Flags())
	cmd.Flags().StringSliceVarP(&manifests, "filename", "f", nil, "file mode: manifests with the pod (a Pod, or a Deployment, StatefulSet, DaemonSet or ReplicaSet) and its Namespace")
	return cmd
}

// explainTarget loads the hierarchy and finds the one pod to explain.
func explainTarget(ctx context.Context, src *hierarchySource, manifests, args []string) (*hierarchy, *corev1.Pod, error) {
	if src.kubeconfig != "" {
		if src.configDir != "" || len(manifests) > 0 {
			return nil, nil, errors.New("give --kubeconfig, or --config and -f, not both")
		}
		if len(args) == 0 {
			return nil, nil, errors.New("name the pod: explain POD -n NAMESPACE --kubeconfig PATH")
		}
		c, err := src.clients()
		if err != nil {
			return nil, nil, err
		}
		ns := src.namespace
		if ns == "" {
			ns = c.namespace
		}
		h, err := src.loadKubeHierarchy(ctx, c, ns, args[0])
		if err != nil {
			return nil, nil, err
		}
		return h, h.pods[0], nil
	}
	if src.configDir == "" && len(manifests) == 0 {
		return nil, nil, errors.New("give --config DIR and -f pod.yaml (file mode), or --kubeconfig PATH (Kubernetes mode)")
	}
	h, err := loadFileHierarchy(src.configDir, manifests)
	if err != nil {
		return nil, nil, err
	}
	candidates := h.pods
	if len(args) == 0 && len(manifests) > 0 {
		// Without a name, the pod of -f is meant, not the directory's WorkloadEntries.
		candidates = h.manifestPods
	}
	var match []*corev1.Pod
	for _, p := range candidates {
		if (len(args) == 0 || p.Name == args[0]) && (src.namespace == "" || p.Namespace == src.namespace) {
			match = append(match, p)
		}
	}
	switch len(match) {
	case 0:
		return nil, nil, errors.New("no such pod in -f or the config's WorkloadEntries")
	case 1:
		return h, match[0], nil
	}
	var names []string
	for _, p := range match {
		names = append(names, podKey(p))
	}
	return nil, nil, fmt.Errorf("several pods match (%s): name one, with -n NAMESPACE if needed", strings.Join(names, ", "))
}

func printExplain(w io.Writer, pod *corev1.Pod, h *hierarchy, e *proxyconfig.Effective, conflicts []proxyconfig.Conflict) {
	fmt.Fprintf(w, "Pod %s: effective sidecar settings\n", podKey(pod))
	fmt.Fprintf(w, "MeshConfig: %s; root namespace %s\n\n", h.meshFrom, rootNamespace(h))
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "SETTING\tVALUE\tLEVEL\tSET BY\tRESTART")
	var notes []string
	for _, fl := range e.Fields() {
		restart := "no"
		if fl.Restart {
			restart = "yes"
		}
		if fl.Note != "" {
			notes = append(notes, fl.Name+": "+fl.Note)
			restart += " *"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", fl.Name, orDash(fl.Value), fl.From.Level, fl.From.Setter, restart)
	}
	tw.Flush()
	printConflicts(w, "", conflicts)
	fmt.Fprintln(w, "\nRESTART yes: the value is written into the pod at injection; re-create the pod to change it\n(kubectl rollout restart deployment/NAME).")
	for _, n := range notes {
		fmt.Fprintln(w, "  * "+n)
	}
}

func printConflicts(w io.Writer, indent string, conflicts []proxyconfig.Conflict) {
	if len(conflicts) == 0 {
		return
	}
	fmt.Fprintf(w, "\n%sConflicts (several ProxyConfigs at one level: the oldest wins, then by name):\n", indent)
	for _, c := range conflicts {
		fmt.Fprintf(w, "%s  %s level: %s applies; ignored: %s\n", indent, c.Level, c.Chosen, strings.Join(c.Ignored, ", "))
	}
}

func rootNamespace(h *hierarchy) string {
	if r := h.mesh.GetRootNamespace(); r != "" {
		return r
	}
	return "istio-system"
}

type fieldJSON struct {
	Name    string `json:"name"`
	Value   string `json:"value"`
	Level   string `json:"level"`
	SetBy   string `json:"setBy"`
	Restart bool   `json:"restart"`
	Note    string `json:"note,omitempty"`
}

type conflictJSON struct {
	Level   string   `json:"level"`
	Chosen  string   `json:"chosen"`
	Ignored []string `json:"ignored"`
}

func explainJSON(pod *corev1.Pod, h *hierarchy, e *proxyconfig.Effective, conflicts []proxyconfig.Conflict) any {
	out := struct {
		Pod           string         `json:"pod"`
		MeshConfig    string         `json:"meshConfig"`
		RootNamespace string         `json:"rootNamespace"`
		Fields        []fieldJSON    `json:"fields"`
		Conflicts     []conflictJSON `json:"conflicts"`
	}{Pod: podKey(pod), MeshConfig: h.meshFrom, RootNamespace: rootNamespace(h), Conflicts: conflictsJSON(conflicts)}
	for _, fl := range e.Fields() {
		out.Fields = append(out.Fields, fieldJSON{fl.Name, fl.Value, fl.From.Level.String(), fl.From.Setter, fl.Restart, fl.Note})
	}
	return out
}

func conflictsJSON(cs []proxyconfig.Conflict) []conflictJSON {
	out := []conflictJSON{}
	for _, c := range cs {
		out = append(out, conflictJSON{c.Level.String(), c.Chosen, c.Ignored})
	}
	return out
}
