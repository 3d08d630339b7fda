package demo

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

func TestReviewsVersionsCallRatingsLikeBookinfo(t *testing.T) {
	for _, tc := range []struct {
		version      string
		ratingsCalls int
		color        string // "" = no ratings in the reviews
	}{
		{"v1", 0, ""},
		{"v2", 1, "black"},
		{"v3", 1, "red"},
	} {
		t.Run(tc.version, func(t *testing.T) {
			sc := newFakeSidecar(t)
			sc.route(ratingsAuthority, startApp(t, App{Name: "ratings", Version: "v1"}))
			addr := startApp(t, App{Name: "reviews", Version: tc.version, SidecarURL: sc.URL})

			resp, body := get(t, "http://"+addr+"/reviews/7", map[string]string{"end-user": "jason", "x-request-id": "r1"})
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d, body %s", resp.StatusCode, body)
			}
			var got reviewsResponse
			if err := json.Unmarshal([]byte(body), &got); err != nil {
				t.Fatalf("decode %s: %v", body, err)
			}
			if got.ID != 7 || got.Version != tc.version || len(got.Reviews) != 2 {
				t.Fatalf("got %s, want id 7, version %s, 2 reviews", body, tc.version)
			}
			calls := sc.requests(ratingsAuthority)
			if len(calls) != tc.ratingsCalls {
				t.Fatalf("reviews-%s called ratings %d times, want %d", tc.version, len(calls), tc.ratingsCalls)
			}
			for _, c := range calls {
				if c.Path != "/ratings/7" || c.Header.Get("end-user") != "jason" || c.Header.Get("x-request-id") != "r1" {
					t.Errorf("ratings call %+v: want /ratings/7 with end-user and x-request-id propagated", c)
				}
			}
			wantStars := map[string]int{"Reviewer1": 5, "Reviewer2": 4}
			for _, r := range got.Reviews {
				switch {
				case tc.color == "" && r.Rating != nil:
					t.Errorf("%s: rating %+v, want none from reviews-v1", r.Reviewer, r.Rating)
				case tc.color != "" && (r.Rating == nil || r.Rating.Color != tc.color || r.Rating.Stars != wantStars[r.Reviewer]):
					t.Errorf("%s: rating %+v, want %d %s stars", r.Reviewer, r.Rating, wantStars[r.Reviewer], tc.color)
				}
			}
		})
	}
}

func TestReviewsReportRatingsFailureInsideA200(t *testing.T) {
	sc := newFakeSidecar(t) // no route to ratings
	addr := startApp(t, App{Name: "reviews", Version: "v2", SidecarURL: sc.URL})
	resp, body := get(t, "http://"+addr+"/reviews/0", nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, want 200 as bookinfo: %s", resp.StatusCode, body)
	}
	var got reviewsResponse
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatal(err)
	}
	for _, r := range got.Reviews {
		if r.Rating == nil || !strings.Contains(r.Rating.Error, "no healthy upstream") || r.Rating.Stars != 0 {
			t.Errorf("%s: rating %+v, want the ratings error instead of stars", r.Reviewer, r.Rating)
		}
	}
}

func TestReviewsAndRatingsRejectNonIntegerIDs(t *testing.T) {
	for _, a := range []App{{Name: "reviews", Version: "v1"}, {Name: "ratings", Version: "v1"}} {
		addr := startApp(t, a)
		resp, body := get(t, "http://"+addr+"/"+a.Name+"/abc", nil)
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "integer") {
			t.Errorf("%s: status %d body %s, want 400 saying the id must be an integer", a.ID(), resp.StatusCode, body)
		}
	}
}

func TestRatingsReturnFixedRatings(t *testing.T) {
	addr := startApp(t, App{Name: "ratings", Version: "v1"})
	resp, body := get(t, "http://"+addr+"/ratings/3", nil)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("status %d, content type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if want := `{"id":3,"ratings":{"Reviewer1":5,"Reviewer2":4}}`; strings.TrimSpace(body) != want {
		t.Errorf("body %s, want %s", body, want)
	}
}
