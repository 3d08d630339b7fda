package demo

import (
	"net/http"
	"strconv"
)

// ratingsResponse is the body of GET /ratings/{id}, bookinfo's shape.
type ratingsResponse struct {
	ID      int            `json:"id"`
	Ratings map[string]int `json:"ratings"`
}

// ratings is the leaf service: fixed ratings for every product, like
// bookinfo's ratings-v1 without a database.
type ratings struct{}

func (r ratings) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ratings/{id}", r.get)
	mux.HandleFunc("GET /healthz", healthz)
	return mux
}

func (ratings) get(w http.ResponseWriter, req *http.Request) {
	id, err := strconv.Atoi(req.PathValue("id"))
	if err != nil {
		writeJSON(w, http.StatusBadRequest, errorJSON{Error: "product id must be an integer"})
		return
	}
	writeJSON(w, http.StatusOK, ratingsResponse{
		ID:      id,
		Ratings: map[string]int{"Reviewer1": 5, "Reviewer2": 4},
	})
}
