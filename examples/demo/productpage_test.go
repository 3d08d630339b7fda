package demo

import (
	"net/http"
	"strings"
	"testing"
)

// startBookinfo runs productpage, reviews at version and ratings, wired
// through one fake sidecar, and returns productpage's URL.
func startBookinfo(t *testing.T, version string) (string, *fakeSidecar) {
	t.Helper()
	sc := newFakeSidecar(t)
	sc.route(ratingsAuthority, startApp(t, App{Name: "ratings", Version: "v1"}))
	sc.route(reviewsAuthority, startApp(t, App{Name: "reviews", Version: version, SidecarURL: sc.URL}))
	return "http://" + startApp(t, App{Name: "productpage", Version: "v1", SidecarURL: sc.URL}) + "/", sc
}

func TestProductpageShowsWhichReviewsVersionAnsweredAndItsStars(t *testing.T) {
	for _, tc := range []struct {
		version   string
		wantStars string // "" = no stars on the page
	}{
		{"v1", ""},
		{"v2", `data-stars="5" data-color="black"`},
		{"v3", `data-stars="5" data-color="red"`},
	} {
		t.Run(tc.version, func(t *testing.T) {
			page, _ := startBookinfo(t, tc.version)
			resp, body := get(t, page, nil)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d, body:\n%s", resp.StatusCode, body)
			}
			if got := resp.Header.Get("x-reviews-version"); got != tc.version {
				t.Errorf("x-reviews-version = %q, want %q", got, tc.version)
			}
			for _, want := range []string{
				"<title>Trellis demo — bookinfo</title>",
				"The Comedy of Errors",
				`<p id="reviews-version">reviews-` + tc.version + `</p>`,
				"Reviewer1",
			} {
				if !strings.Contains(body, want) {
					t.Errorf("page lacks %q:\n%s", want, body)
				}
			}
			if tc.wantStars == "" {
				if strings.Contains(body, `class="stars"`) {
					t.Errorf("reviews-%s page shows stars:\n%s", tc.version, body)
				}
			} else if !strings.Contains(body, tc.wantStars) || !strings.Contains(body, "★★★★☆") {
				t.Errorf("page lacks %s stars (5 and 4):\n%s", tc.wantStars, body)
			}
		})
	}
}

func TestProductpageCallsReviewsThroughSidecarPropagatingHeaders(t *testing.T) {
	page, sc := startBookinfo(t, "v2")
	in := map[string]string{
		"end-user":     "jason",
		"x-request-id": "req-42",
		"traceparent":  "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		"x-b3-traceid": "80f198ee56343ba864fe8b2a57d3eff7",
		"x-b3-sampled": "1",
		"x-unrelated":  "must-not-propagate",
	}
	if resp, body := get(t, page, in); resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, body:\n%s", resp.StatusCode, body)
	}
	for _, hop := range []struct{ authority, path string }{
		{reviewsAuthority, "/reviews/0"},
		{ratingsAuthority, "/ratings/0"},
	} {
		reqs := sc.requests(hop.authority)
		if len(reqs) != 1 {
			t.Fatalf("sidecar saw %d requests for %s, want 1", len(reqs), hop.authority)
		}
		r := reqs[0]
		if !r.AbsoluteForm || r.Path != hop.path {
			t.Errorf("%s: got path %q absolute-form=%v, want explicit-proxy request for %s", hop.authority, r.Path, r.AbsoluteForm, hop.path)
		}
		for k, v := range in {
			want := v
			if k == "x-unrelated" {
				want = ""
			}
			if got := r.Header.Get(k); got != want {
				t.Errorf("%s: header %s = %q, want %q", hop.authority, k, got, want)
			}
		}
	}
}

func TestProductpageUserQueryParameterSetsEndUser(t *testing.T) {
	page, sc := startBookinfo(t, "v1")
	resp, body := get(t, page+"?user=jason", nil)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "<b>jason</b>") {
		t.Fatalf("status %d, page does not show user jason:\n%s", resp.StatusCode, body)
	}
	reqs := sc.requests(reviewsAuthority)
	if len(reqs) != 1 || reqs[0].Header.Get("end-user") != "jason" {
		t.Fatalf("reviews requests %+v, want one with end-user: jason", reqs)
	}
}

func TestProductpageAnswers503WithErrorWhenReviewsFails(t *testing.T) {
	sc := newFakeSidecar(t) // no route to reviews: "no healthy upstream"
	page := "http://" + startApp(t, App{Name: "productpage", Version: "v1", SidecarURL: sc.URL}) + "/"
	resp, body := get(t, page, nil)
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("status %d, want 503", resp.StatusCode)
	}
	if got := resp.Header.Get("x-reviews-version"); got != "" {
		t.Errorf("x-reviews-version = %q, want none", got)
	}
	if !strings.Contains(body, `<p id="reviews-error" class="error">reviews unavailable:`) || !strings.Contains(body, "no healthy upstream") {
		t.Errorf("page does not carry the reviews error:\n%s", body)
	}
}

func TestProductpagePoolsConnectionsToItsSidecar(t *testing.T) {
	sc := newFakeSidecar(t)
	sc.route(reviewsAuthority, startApp(t, App{Name: "reviews", Version: "v1"}))
	page := "http://" + startApp(t, App{Name: "productpage", Version: "v1", SidecarURL: sc.URL}) + "/"
	for range 5 {
		if resp, body := get(t, page, nil); resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d, body:\n%s", resp.StatusCode, body)
		}
	}
	if n := sc.connections(); n != 1 {
		t.Errorf("5 sequential pages opened %d connections to the sidecar, want 1 kept alive", n)
	}
}

func TestProductpageRoutes(t *testing.T) {
	sc := newFakeSidecar(t)
	sc.route(reviewsAuthority, startApp(t, App{Name: "reviews", Version: "v1"}))
	base := "http://" + startApp(t, App{Name: "productpage", Version: "v1", SidecarURL: sc.URL})
	for _, tc := range []struct {
		path string
		want int
	}{
		{"/", http.StatusOK},
		{"/productpage", http.StatusOK},
		{"/healthz", http.StatusOK},
		{"/nope", http.StatusNotFound},
	} {
		if resp, _ := get(t, base+tc.path, nil); resp.StatusCode != tc.want {
			t.Errorf("GET %s: status %d, want %d", tc.path, resp.StatusCode, tc.want)
		}
	}
}
