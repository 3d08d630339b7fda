package uitest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/trellis-mesh/trellis/internal/testenv/browser"
)

// The browser window every test uses (CSS pixels).
const winW, winH = 1400, 900

var apiClient = &http.Client{Timeout: 30 * time.Second}

func getJSON(t testing.TB, url string, v any) {
	t.Helper()
	resp, err := apiClient.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s: %s", url, resp.Status, body)
	}
	if err := json.Unmarshal(body, v); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
}

// js quotes s as a JavaScript string literal.
func js(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// graphData is #graph's data attributes, which the page sets after every
// render (docs/console.md).
const graphData = `JSON.stringify(document.getElementById("graph").dataset)`

// renderedCounts waits until the page has drawn exactly nodes and edges
// and returns how long that took.
func renderedCounts(b *browser.Browser, nodes, edges int, within time.Duration) time.Duration {
	return b.WaitFor(within,
		fmt.Sprintf(`document.body.dataset.ready === "1" && document.getElementById("graph").dataset.nodes === "%d" && document.getElementById("graph").dataset.edges === "%d"`, nodes, edges),
		fmt.Sprintf("the graph drawn with %d nodes and %d edges", nodes, edges), graphData)
}

// setWeights types weights into the service view's inputs of one route, as
// a user would (value, then the input event the page listens to).
func setWeights(b *browser.Browser, vs string, http int, weights ...int) {
	b.WaitFor(10*time.Second,
		fmt.Sprintf(`document.querySelectorAll('input.weight[data-vs=%s][data-http="%d"]').length === %d`, js(vs), http, len(weights)),
		fmt.Sprintf("%d weight inputs for %s http[%d]", len(weights), vs, http),
		`document.getElementById("service-view").innerText`)
	for i, w := range weights {
		sel := fmt.Sprintf(`input.weight[data-vs=%s][data-http="%d"][data-dest="%d"]`, js(vs), http, i)
		b.Do(10*time.Second,
			chromedp.SetValue(chromedp.CSS(sel), fmt.Sprint(w)),
			chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`document.querySelector(%s).dispatchEvent(new Event("input", {bubbles: true}))`, js(sel))))
	}
}

func clickSave(b *browser.Browser, vs string, http int) {
	b.Do(10*time.Second, chromedp.Click(chromedp.CSS(fmt.Sprintf(`button.save-weights[data-vs=%s][data-http="%d"]`, js(vs), http))))
}

// inputValues reads the weights shown for one route.
func inputValues(b *browser.Browser, vs string, http int) string {
	return browser.Eval[string](b, fmt.Sprintf(
		`[...document.querySelectorAll('input.weight[data-vs=%s][data-http="%d"]')].map(i => i.value).join(",")`, js(vs), http))
}

func joinInts(v []int32) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = fmt.Sprint(x)
	}
	return strings.Join(s, ",")
}
