package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"

	"github.com/trellis-mesh/trellis/internal/config"
	"github.com/trellis-mesh/trellis/internal/inject"
	"github.com/trellis-mesh/trellis/internal/proxyconfig"
)

func newProxyConfigDiffCmd(f *proxyConfigFlags) *cobra.Command {
	var src hierarchySource
	var files, deletes, podFiles []string
	params := inject.DefaultParams()
	cmd := &cobra.Command{
		Use:   "diff -f proxyconfig.yaml [--config DIR | --kubeconfig PATH]",
		Short: "Show which pods a ProxyConfig change would affect and how their settings would change; applies nothing",
		Long: "Compares each pod's effective sidecar settings (see explain) with the ProxyConfigs of -f\n" +
			"created or replacing those of the same namespace/name, and those of --delete removed,\n" +
			"against the settings now. Only pods whose settings change are listed, each with every\n" +
			"changed value (old -> new, with the level and resource that set it), the unified diff of\n" +
			"the injected sidecar spec (containers, init containers, annotations, as `trellis inject`\n" +
			"would write them), and whether it needs a restart: settings are written into a pod at\n" +
			"injection, so running pods keep their old spec until re-created. A change that makes a pod's settings invalid is shown as an error\n" +
			"for that pod. Nothing is written anywhere.\n\n" +
			"File mode: --config DIR, the pods being the directory's WorkloadEntries and those of\n" +
			"--pods manifests. Kubernetes mode: --kubeconfig PATH, every pod of the cluster (or of -n).",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if f.output != "short" && f.output != "json" {
				return fmt.Errorf("--output %q: want short or json", f.output)
			}
			if err := src.check(); err != nil {
				return err
			}
			if len(files) == 0 && len(deletes) == 0 {
				return errors.New("give the changed ProxyConfigs with -f FILE, or --delete NAMESPACE/NAME")
			}
			var proposed []*proxyconfig.Resource
			for _, file := range files {
				data, err := os.ReadFile(file)
				if err != nil {
					return err
				}
				pcs, err := config.ParseProxyConfigs(file, data)
				if err != nil {
					return err
				}
				proposed = append(proposed, pcs...)
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), f.timeout)
			defer cancel()
			var h *hierarchy
			var err error
			if src.kubeconfig != "" {
				if len(podFiles) > 0 {
					return errors.New("--pods is for file mode; Kubernetes mode reads the cluster's pods")
				}
				c, cerr := src.clients()
				if cerr != nil {
					return cerr
				}
				h, err = src.loadKubeHierarchy(ctx, c, src.namespace, "")
			} else {
				h, err = loadFileHierarchy(src.configDir, podFiles)
			}
			if err != nil {
				return err
			}
			d, err := diffHierarchy(h, proposed, deletes, params, time.Now())
			if err != nil {
				return err
			}
			if f.output == "json" {
				return writeJSON(cmd.OutOrStdout(), d)
			}
			printDiff(cmd.OutOrStdout(), d)
			return nil
		},
	}
	src.register(cmd.Flags())
	cmd.Flags().StringSliceVarP(&files, "filename", "f", nil, "ProxyConfigs to create, or to replace the one of the same namespace/name")
	cmd.Flags().StringSliceVar(&deletes, "delete", nil, "a ProxyConfig to delete, as NAMESPACE/NAME")
	cmd.Flags().StringVar(&params.ProxyImage, "image", params.ProxyImage, "trellis-proxy image the injected spec names (the injector's)")
	cmd.Flags().BoolVar(&params.NativeSidecars, "native-sidecars", params.NativeSidecars, "render the proxy as a native sidecar, as the injector does")
	cmd.Flags().StringSliceVar(&podFiles, "pods", nil, "file mode: manifests of the pods to check (Pods, Deployments, ...; Namespaces)")
	return cmd
}

// proxyConfigDiff is the result of diff. Each pod's section lists the effective settings
// that change and the diff of the sidecar spec injection would write.
type proxyConfigDiff struct {
	Proposed []string  `json:"proposed"` // "ProxyConfig ns/name (new|changed|deleted)"
	Pods     []podDiff `json:"pods"`
	Checked  int       `json:"checked"` // pods compared
	Applied  bool      `json:"applied"` // always false: diff writes nothing
}

type podDiff struct {
	Pod      string          `json:"pod"`
	Restart  bool            `json:"restart"` // the injected spec changes: re-create the pod to apply it
	Settings []settingChange `json:"settings"`
	// Spec is the unified diff of the injected spec (YAML), "" when it would not change.
	Spec string `json:"spec,omitempty"`
	// Error is why the pod's settings would be invalid after the change (injection refuses it).
	Error        string         `json:"error,omitempty"`
	OldError     string         `json:"oldError,omitempty"`
	OldConflicts []conflictJSON `json:"oldConflicts,omitempty"`
	Conflicts    []conflictJSON `json:"conflicts,omitempty"`
}

type settingChange struct {
	Name     string `json:"name"`
	Old      string `json:"old"`
	New      string `json:"new"`
	OldLevel string `json:"oldLevel"`
	OldSetBy string `json:"oldSetBy"`
	NewLevel string `json:"newLevel"`
	NewSetBy string `json:"newSetBy"`
	Restart  bool   `json:"restart"`
}

// diffHierarchy applies the proposal to a copy of h's ProxyConfigs and compares every pod.
// A new ProxyConfig is created now, so it loses conflicts to older ones, as it would once applied.
func diffHierarchy(h *hierarchy, proposed []*proxyconfig.Resource, deletes []string, params inject.Params, now time.Time) (*proxyConfigDiff, error) {
	d := &proxyConfigDiff{Pods: []podDiff{}}
	key := func(r *proxyconfig.Resource) string { return r.Namespace + "/" + r.Name }
	after := append([]*proxyconfig.Resource(nil), h.proxyConfigs...)
	for _, p := range proposed {
		state := "new"
		created := now
		for i, old := range after {
			if key(old) == key(p) {
				state, created = "changed", old.Created
				after = append(after[:i:i], after[i+1:]...)
				break
			}
		}
		c := *p
		c.Created = created
		after = append(after, &c)
		d.Proposed = append(d.Proposed, fmt.Sprintf("ProxyConfig %s (%s)", key(p), state))
	}
	for _, del := range deletes {
		found := false
		for i, old := range after {
			if key(old) == del {
				after = append(after[:i:i], after[i+1:]...)
				found = true
				break
			}
		}
		if !found {
			return nil, fmt.Errorf("--delete %s: no such ProxyConfig", del)
		}
		d.Proposed = append(d.Proposed, "ProxyConfig "+del+" (deleted)")
	}
	for _, pod := range h.pods {
		d.Checked++
		if pd, changed := diffPod(h, pod, after, params); changed {
			d.Pods = append(d.Pods, pd)
		}
	}
	return d, nil
}

func diffPod(h *hierarchy, pod *corev1.Pod, after []*proxyconfig.Resource, params inject.Params) (podDiff, bool) {
	oldE, oldC, oldErr := proxyconfig.Resolve(h.input(pod, h.proxyConfigs))
	newE, newC, newErr := proxyconfig.Resolve(h.input(pod, after))
	pd := podDiff{Pod: podKey(pod), Settings: []settingChange{}}
	changed := false
	if errString(oldErr) != errString(newErr) {
		pd.OldError, pd.Error = errString(oldErr), errString(newErr)
		changed = true
	}
	if fmt.Sprint(oldC) != fmt.Sprint(newC) {
		pd.OldConflicts, pd.Conflicts = conflictsJSON(oldC), conflictsJSON(newC)
		changed = true
	}
	if oldE != nil && newE != nil {
		olds := map[string]proxyconfig.Field{}
		for _, fl := range oldE.Fields() {
			olds[fl.Name] = fl
		}
		news := newE.Fields()
		seen := map[string]bool{}
		for _, n := range news {
			seen[n.Name] = true
			o, ok := olds[n.Name]
			if ok && o.Value == n.Value && o.From == n.From {
				continue
			}
			c := settingChange{Name: n.Name, Old: o.Value, New: n.Value, NewLevel: n.From.Level.String(), NewSetBy: n.From.Setter,
				Restart: n.Restart && o.Value != n.Value}
			if ok {
				c.OldLevel, c.OldSetBy = o.From.Level.String(), o.From.Setter
			} else {
				c.Old, c.OldSetBy, c.Restart = "(unset)", "-", n.Restart
			}
			pd.Settings = append(pd.Settings, c)
			pd.Restart = pd.Restart || c.Restart
		}
		for _, o := range oldE.Fields() {
			if !seen[o.Name] {
				pd.Settings = append(pd.Settings, settingChange{Name: o.Name, Old: o.Value, New: "(unset)", OldLevel: o.From.Level.String(),
					OldSetBy: o.From.Setter, NewSetBy: "-", Restart: o.Restart})
				pd.Restart = pd.Restart || o.Restart
			}
		}
		changed = changed || len(pd.Settings) > 0
		spec, err := specDiff(pod, oldE, newE, params)
		switch {
		case err != nil && newErr == nil:
			pd.Error = err.Error()
			changed = true
		case err == nil:
			// The spec is what the pod runs with: it alone says whether a restart is needed.
			pd.Spec, pd.Restart = spec, spec != ""
			changed = changed || spec != ""
		}
	}
	if newErr != nil && oldErr == nil {
		pd.Restart = false // nothing to restart into: injection refuses the pod
	}
	return pd, changed
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func printDiff(w io.Writer, d *proxyConfigDiff) {
	fmt.Fprintf(w, "Proposed: %s\n", strings.Join(d.Proposed, ", "))
	for _, p := range d.Pods {
		fmt.Fprintln(w)
		switch {
		case p.Error != "":
			fmt.Fprintf(w, "Pod %s: its settings would be INVALID; injection would refuse it:\n", p.Pod)
			for _, line := range strings.Split(p.Error, "\n") {
				fmt.Fprintf(w, "    %s\n", line)
			}
		case p.Restart:
			fmt.Fprintf(w, "Pod %s: restart needed (the pod keeps its old settings until re-created)\n", p.Pod)
		default:
			fmt.Fprintf(w, "Pod %s: no restart needed (the injected spec would not change)\n", p.Pod)
		}
		if p.OldError != "" {
			fmt.Fprintf(w, "  now invalid: %s\n", strings.ReplaceAll(p.OldError, "\n", "\n    "))
		}
		if len(p.Settings) > 0 {
			fmt.Fprintln(w, "  Effective settings:")
			tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
			fmt.Fprintln(tw, "    SETTING\tOLD\tNEW\tOLD SET BY\tNEW SET BY")
			for _, s := range p.Settings {
				fmt.Fprintf(tw, "    %s\t%s\t%s\t%s\t%s\n", s.Name, orDash(s.Old), orDash(s.New), setBy(s.OldLevel, s.OldSetBy), setBy(s.NewLevel, s.NewSetBy))
			}
			tw.Flush()
		}
		if p.Spec != "" {
			fmt.Fprintln(w, "  Injected spec:")
			for _, line := range strings.Split(strings.TrimSuffix(p.Spec, "\n"), "\n") {
				fmt.Fprintf(w, "    %s\n", line)
			}
		}
		if p.Conflicts != nil || p.OldConflicts != nil {
			fmt.Fprintln(w, "  Conflicts (several ProxyConfigs at one level: the oldest wins, then by name):")
			for _, c := range p.OldConflicts {
				fmt.Fprintf(w, "    before: %s level: %s applies; ignored: %s\n", c.Level, c.Chosen, strings.Join(c.Ignored, ", "))
			}
			for _, c := range p.Conflicts {
				fmt.Fprintf(w, "    after:  %s level: %s applies; ignored: %s\n", c.Level, c.Chosen, strings.Join(c.Ignored, ", "))
			}
		}
	}
	fmt.Fprintf(w, "\n%d of %d pods affected; nothing was applied.\n", len(d.Pods), d.Checked)
}

func setBy(level, setter string) string {
	if level == "" {
		return setter
	}
	return level + ": " + setter
}
