package analyze

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// found is one message as the tests compare it: code, resource, field.
func found(msgs []Message) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = fmt.Sprintf("%s %s %s/%s %s", m.Code, m.Resource.Kind, m.Resource.Namespace, m.Resource.Name, m.Field)
	}
	slices.Sort(out)
	return out
}

func analyzeDir(t *testing.T, dir string) []Message {
	t.Helper()
	in, err := FromDir(filepath.Join("testdata", dir))
	if err != nil {
		t.Fatal(err)
	}
	return Analyze(in)
}

func TestAnalyzersReportEachProblemOnTheResourceAndField(t *testing.T) {
	for _, tc := range []struct {
		dir  string
		want []string
	}{
		{"dangling", []string{
			"IST0101 VirtualService default/reviews spec.gateways[1]",
			"IST0101 VirtualService default/reviews spec.http[0].route[0].destination.subset",
			"IST0101 VirtualService default/reviews spec.http[1].route[0].destination.host",
			"IST0173 DestinationRule default/reviews spec.subsets[1]",
			"TRL0001 DestinationRule default/ghost spec.host",
		}},
		{"conflict", []string{
			"IST0109 VirtualService default/reviews-a spec.hosts",
			"IST0109 VirtualService default/reviews-b spec.hosts",
		}},
		{"shadowed", []string{
			"IST0130 VirtualService default/reviews spec.http[1]",
			"IST0130 VirtualService default/reviews spec.http[4]",
			"IST0131 VirtualService default/reviews spec.http[2].match[0]",
		}},
		{"selectors", []string{
			"IST0127 AuthorizationPolicy default/nothing spec.selector",
			"IST0127 Gateway default/ingress spec.selector",
			"IST0127 PeerAuthentication other/elsewhere spec.selector",
			"IST0127 RequestAuthentication default/nothing spec.selector",
			"IST0127 ServiceEntry default/nothing spec.workloadSelector",
			"IST0127 Sidecar default/nothing spec.workloadSelector",
			"IST0127 Telemetry default/nothing spec.selector",
		}},
		{"invalid", []string{
			"IST0101 VirtualService default/ratings spec.http[0].route[0].destination.host",
			"IST0106 VirtualService default/broken spec.http[0].route[0].weight",
		}},
		{"gatewayhost", []string{
			"IST0132 VirtualService default/bookinfo spec.hosts",
		}},
		{"clean", []string{}},
	} {
		t.Run(tc.dir, func(t *testing.T) {
			msgs := analyzeDir(t, tc.dir)
			if got := found(msgs); !slices.Equal(got, tc.want) {
				var b strings.Builder
				for _, m := range msgs {
					b.WriteString("\n  " + m.String())
				}
				t.Errorf("got %q\nwant %q\nmessages:%s", got, tc.want, b.String())
			}
		})
	}
}

// lineOf is the 1-based line of the first line of file holding s.
func lineOf(t *testing.T, file, s string) int {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	for i, l := range strings.Split(string(data), "\n") {
		if strings.Contains(l, s) {
			return i + 1
		}
	}
	t.Fatalf("%s has no %q", file, s)
	return 0
}

func TestMessagesPointAtTheOffendingLineInIstioctlForm(t *testing.T) {
	file := filepath.Join("testdata", "dangling", "reviews.yaml")
	var lines []string
	for _, m := range analyzeDir(t, "dangling") {
		lines = append(lines, m.String())
	}
	for _, want := range []string{
		fmt.Sprintf(`Error [IST0101] (VirtualService default/reviews %s:%d) Referenced host not found: "reviewz"`,
			file, lineOf(t, file, "host: reviewz")),
		fmt.Sprintf(`Error [IST0101] (VirtualService default/reviews %s:%d) Referenced host+subset in destinationrule not found: "reviews+v3"`,
			file, lineOf(t, file, "subset: v3")),
		fmt.Sprintf(`Error [IST0101] (VirtualService default/reviews %s:%d) Referenced gateway not found: "missing-gw"`,
			file, lineOf(t, file, "gateways: [mesh, missing-gw]")),
	} {
		if !slices.Contains(lines, want) {
			t.Errorf("no %q in\n%s", want, strings.Join(lines, "\n"))
		}
	}
}

func TestValidationErrorsKeepFileLineAndFieldWhileTheRestIsAnalyzed(t *testing.T) {
	file := filepath.Join("testdata", "invalid", "vs.yaml")
	msgs := analyzeDir(t, "invalid")
	want := fmt.Sprintf("Error [IST0106] (VirtualService default/broken %s:%d) Schema validation error: spec.http[0].route[0].weight: must be between 0 and 100, got -1",
		file, lineOf(t, file, "weight: -1"))
	if len(msgs) == 0 || msgs[0].String() != want {
		t.Fatalf("first message %v, want %q", msgs, want)
	}
}

func TestEveryCodeIsDocumentedWithItsLevel(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "analyze.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range Codes {
		row := fmt.Sprintf("| %s | %s | %s |", c.ID, c.Level, c.Name)
		if !strings.Contains(string(doc), row) {
			t.Errorf("docs/analyze.md has no row starting %q", row)
		}
	}
}
