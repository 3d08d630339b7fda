package demo

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// ratingsTimeout is bookinfo's reviews → ratings timeout. It is longer than
// productpage's reviews timeout on purpose, so that a delay injected on
// ratings surfaces as a productpage error, as in Istio's fault-injection
// task.
const ratingsTimeout = 10 * time.Second

// starColor says which reviews versions show ratings, and in what color.
var starColor = map[string]string{"v2": "black", "v3": "red"}

// reviewsResponse is the body of GET /reviews/{id}.
type reviewsResponse struct {
	ID      int      `json:"id"`
	Version string   `json:"version"`
	Reviews []review `json:"reviews"`
}

type review struct {
	Reviewer string  `json:"reviewer"`
	Text     string  `json:"text"`
	Rating   *rating `json:"rating,omitempty"` // nil for reviews-v1
}

type rating struct {
	Stars int    `json:"stars,omitempty"`
	Color string `json:"color,omitempty"`
	// Error replaces the stars when ratings could not be reached; the
	// reviews still answer 200, as in bookinfo.
	Error string `json:"error,omitempty"`
}

var bookReviews = []review{
	{Reviewer: "Reviewer1", Text: "An extremely entertaining play by Shakespeare. The slapstick humour is refreshing!"},
	{Reviewer: "Reviewer2", Text: "Absolutely fun and entertaining. The play lacks thematic depth when compared to other plays by Shakespeare."},
}

// reviews serves the reviews of a product. v1 has no ratings; v2 and v3
// call ratings through the sidecar and show black or red stars.
type reviews struct {
	version string
	out     *outbound
}

func (rv reviews) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /reviews/{id}", rv.get)
	mux.HandleFunc("GET /healthz", healthz)
	return mux
}

func (rv reviews) get(w http.ResponseWriter, req *http.Request) {
	id, err := strconv.Atoi(req.PathValue("id"))
	if err != nil {
		writeJSON(w, http.StatusBadRequest, errorJSON{Error: "product id must be an integer"})
		return
	}
	resp := reviewsResponse{ID: id, Version: rv.version, Reviews: make([]review, len(bookReviews))}
	copy(resp.Reviews, bookReviews)
	if color, ok := starColor[rv.version]; ok {
		rv.addRatings(req.Context(), req.Header, &resp, color)
	}
	writeJSON(w, http.StatusOK, resp)
}

func (rv reviews) addRatings(ctx context.Context, in http.Header, resp *reviewsResponse, color string) {
	ctx, cancel := context.WithTimeout(ctx, ratingsTimeout)
	defer cancel()
	url := fmt.Sprintf("http://ratings.default.svc.cluster.local:9080/ratings/%d", resp.ID)
	var got ratingsResponse
	err := rv.out.getJSON(ctx, url, in, &got)
	if err != nil {
		rv.out.log.Warn("ratings unavailable", "err", err)
	}
	for i := range resp.Reviews {
		r := &rating{Color: color}
		if err != nil {
			r = &rating{Error: "ratings unavailable: " + err.Error()}
		} else if stars, ok := got.Ratings[resp.Reviews[i].Reviewer]; ok {
			r.Stars = stars
		} else {
			r = nil
		}
		resp.Reviews[i].Rating = r
	}
}
