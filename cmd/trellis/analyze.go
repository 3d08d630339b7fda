package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"

	"github.com/trellis-mesh/trellis/internal/analyze"
	"github.com/trellis-mesh/trellis/internal/controlplane"
)

func newAnalyzeCmd() *cobra.Command {
	var (
		kubeconfig, namespace, istioNS, output, failure, outThreshold string
		allNamespaces                                                 bool
		timeout                                                       time.Duration
		suppress                                                      []string
	)
	cmd := &cobra.Command{
		Use:   "analyze [DIR] | --kubeconfig PATH [-n NS | -A]",
		Short: "Find problems in Istio config: dangling references, conflicts, shadowed routes, selectors matching nothing",
		Long: "analyze reads a config directory (as `trellis control-plane --config-dir` does) or a\n" +
			"cluster (--kubeconfig) and reports what would make the mesh behave otherwise than meant,\n" +
			"in istioctl analyze's form and codes (docs/analyze.md lists them). It exits non-zero\n" +
			"when a message is at or above --failure-threshold.",
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			failAt, err := analyze.ParseLevel(failure)
			if err != nil {
				return fmt.Errorf("--failure-threshold: %w", err)
			}
			showAt, err := analyze.ParseLevel(outThreshold)
			if err != nil {
				return fmt.Errorf("--output-threshold: %w", err)
			}
			if output != "log" && output != "json" && output != "yaml" {
				return fmt.Errorf("-o %q: want log, json or yaml", output)
			}
			rules, err := parseSuppress(suppress)
			if err != nil {
				return err
			}
			var (
				in    analyze.Input
				scope string
			)
			switch {
			case len(args) == 1 && kubeconfig != "":
				return errors.New("give a DIR or --kubeconfig PATH, not both")
			case len(args) == 1:
				if namespace != "" || allNamespaces {
					return errors.New("-n and -A are for --kubeconfig; a directory is analyzed whole")
				}
				if in, err = analyze.FromDir(args[0]); err != nil {
					return err
				}
				scope = "directory " + args[0]
			case kubeconfig != "":
				rc, err := controlplane.KubernetesConfig(kubeconfig)
				if err != nil {
					return err
				}
				if !allNamespaces && namespace == "" {
					namespace = kubeconfigNamespace(kubeconfig)
				}
				if allNamespaces {
					namespace, scope = "", "all namespaces"
				} else {
					scope = "namespace: " + namespace
				}
				ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
				defer cancel()
				if in, err = analyze.FromCluster(ctx, rc, istioNS); err != nil {
					return err
				}
			default:
				return errors.New("give a config DIR or --kubeconfig PATH")
			}
			var shown []analyze.Message
			failed := 0
			for _, m := range analyze.Analyze(in) {
				// Messages about no resource (a file's YAML) belong to every namespace.
				if namespace != "" && m.Resource.Name != "" && m.Resource.Namespace != namespace {
					continue
				}
				if suppressed(rules, m) {
					continue
				}
				if m.Level >= failAt {
					failed++
				}
				if m.Level >= showAt {
					shown = append(shown, m)
				}
			}
			if err := writeMessages(cmd.OutOrStdout(), cmd.ErrOrStderr(), output, shown, scope); err != nil {
				return err
			}
			if failed > 0 {
				return fmt.Errorf("analyze: %d message(s) at or above %s", failed, failAt)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&kubeconfig, "kubeconfig", "", "analyze the cluster this kubeconfig names")
	f.StringVarP(&namespace, "namespace", "n", "", "with --kubeconfig: report on this namespace (default: the kubeconfig's)")
	f.BoolVarP(&allNamespaces, "all-namespaces", "A", false, "with --kubeconfig: report on every namespace")
	f.StringVar(&istioNS, "istio-namespace", "istio-system", "with --kubeconfig: the namespace of the istio ConfigMap (the MeshConfig)")
	f.DurationVar(&timeout, "timeout", 30*time.Second, "with --kubeconfig: give up reading the cluster after this long")
	f.StringVarP(&output, "output", "o", "log", "output format: log, json or yaml")
	f.StringVar(&failure, "failure-threshold", "Error", "exit non-zero when a message is at or above this level (Info, Warning, Error)")
	f.StringVar(&outThreshold, "output-threshold", "Info", "show messages at or above this level (Info, Warning, Error)")
	f.StringArrayVarP(&suppress, "suppress", "S", nil, `leave out messages: "CODE=Kind ns/name" (Kind, ns and name may be "*"; repeatable)`)
	cmd.MarkFlagsMutuallyExclusive("namespace", "all-namespaces")
	return cmd
}

// kubeconfigNamespace is the current context's namespace, "default" if it has none.
func kubeconfigNamespace(path string) string {
	rules := &clientcmd.ClientConfigLoadingRules{ExplicitPath: path}
	ns, _, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, nil).Namespace()
	if err != nil || ns == "" {
		return "default"
	}
	return ns
}

type suppressRule struct{ code, kind, ns, name string }

// parseSuppress reads istioctl's --suppress form, "IST0102=Namespace frod"
// or "IST0101=VirtualService default/reviews", with glob patterns.
func parseSuppress(specs []string) ([]suppressRule, error) {
	var out []suppressRule
	for _, s := range specs {
		code, res, ok := strings.Cut(s, "=")
		kind, ref, ok2 := strings.Cut(strings.TrimSpace(res), " ")
		if !ok || !ok2 || code == "" {
			return nil, fmt.Errorf("--suppress %q: want CODE=Kind ns/name", s)
		}
		ns, name, ok := strings.Cut(strings.TrimSpace(ref), "/")
		if !ok {
			ns, name = "*", ns // a cluster-scoped or namespace-less resource
		}
		for _, p := range []string{code, kind, ns, name} {
			if _, err := path.Match(p, ""); err != nil {
				return nil, fmt.Errorf("--suppress %q: %w", s, err)
			}
		}
		out = append(out, suppressRule{strings.TrimSpace(code), kind, ns, name})
	}
	return out, nil
}

func suppressed(rules []suppressRule, m analyze.Message) bool {
	match := func(p, s string) bool { ok, _ := path.Match(p, s); return ok }
	for _, r := range rules {
		if match(r.code, m.Code) && match(r.kind, m.Resource.Kind) && match(r.ns, m.Resource.Namespace) && match(r.name, m.Resource.Name) {
			return true
		}
	}
	return false
}

func writeMessages(out, errOut io.Writer, format string, msgs []analyze.Message, scope string) error {
	if msgs == nil {
		msgs = []analyze.Message{}
	}
	switch format {
	case "json":
		b, err := json.MarshalIndent(msgs, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(out, "%s\n", b)
		return err
	case "yaml":
		b, err := yaml.Marshal(msgs)
		if err != nil {
			return err
		}
		_, err = out.Write(b)
		return err
	}
	if len(msgs) == 0 {
		_, err := fmt.Fprintf(errOut, "✔ No validation issues found when analyzing %s.\n", scope)
		return err
	}
	for _, m := range msgs {
		if _, err := fmt.Fprintln(out, m.String()); err != nil {
			return err
		}
	}
	return nil
}
