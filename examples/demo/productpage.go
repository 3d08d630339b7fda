package demo

import (
	"context"
	"html/template"
	"net/http"
	"strings"
	"time"
)

const (
	// reviewsURL names the service, not an address: the sidecar resolves
	// it from the mesh config.
	reviewsURL = "http://reviews.default.svc.cluster.local:9080/reviews/0"
	// reviewsTimeout is bookinfo productpage's timeout for reviews.
	reviewsTimeout = 3 * time.Second
)

// productpage is the front page. It shows the product and the reviews of
// whichever reviews version the mesh routed to.
//
// When reviews fails, the page answers 503 with the error (unlike
// bookinfo, which renders "reviews unavailable" with 200), so that routing
// mistakes are visible to tests and to curl at a glance. Ratings failures
// stay a 200: reviews reports them inside the reviews block.
type productpage struct {
	out *outbound
}

func (p productpage) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", p.page)
	mux.HandleFunc("GET /productpage", p.page)
	mux.HandleFunc("GET /healthz", healthz)
	return mux
}

type pageData struct {
	Title   string
	User    string
	Reviews *reviewsResponse
	Error   string
}

func (p productpage) page(w http.ResponseWriter, req *http.Request) {
	in := req.Header.Clone()
	// Browsers cannot easily set headers: ?user=jason stands in for
	// bookinfo's login, which sets end-user.
	if u := req.URL.Query().Get("user"); u != "" && in.Get("end-user") == "" {
		in.Set("end-user", u)
	}
	data := pageData{Title: "Trellis demo — bookinfo", User: in.Get("end-user")}

	ctx, cancel := context.WithTimeout(req.Context(), reviewsTimeout)
	defer cancel()
	var rv reviewsResponse
	status := http.StatusOK
	if err := p.out.getJSON(ctx, reviewsURL, in, &rv); err != nil {
		p.out.log.Warn("reviews unavailable", "err", err)
		status = http.StatusServiceUnavailable
		data.Error = "reviews unavailable: " + err.Error()
	} else {
		data.Reviews = &rv
		w.Header().Set("x-reviews-version", rv.Version)
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	if err := pageTemplate.Execute(w, data); err != nil {
		p.out.log.Warn("render product page", "err", err)
	}
}

var pageTemplate = template.Must(template.New("page").Funcs(template.FuncMap{
	"stars": func(n int) string { return strings.Repeat("★", n) + strings.Repeat("☆", max(0, 5-n)) },
}).Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{{.Title}}</title>
<style>
body { font-family: sans-serif; max-width: 48em; margin: 2em auto; }
blockquote { margin: 1em 0; }
.stars { font-size: 1.3em; }
.error { color: #b00; }
</style>
</head>
<body>
<h1>{{.Title}}</h1>
{{with .User}}<p id="user">Signed in as <b>{{.}}</b></p>{{end}}
<h2 id="product">The Comedy of Errors</h2>
<p>Wikipedia Summary: The Comedy of Errors is one of William Shakespeare's early plays.
It is his shortest and one of his most farcical comedies, with a major part of the humour
coming from slapstick and mistaken identity, in addition to puns and word play.</p>
<section id="reviews">
<h3>Book Reviews</h3>
{{with .Reviews}}<p id="reviews-version">reviews-{{.Version}}</p>
{{range .Reviews}}<blockquote>
<p>{{.Text}}</p>
<small>{{.Reviewer}}</small>
{{with .Rating}}{{if .Error}}<p class="error ratings-error">{{.Error}}</p>{{else}}<p><span class="stars" data-stars="{{.Stars}}" data-color="{{.Color}}" style="color: {{.Color}}">{{stars .Stars}}</span></p>{{end}}{{end}}
</blockquote>
{{end}}{{end}}{{with .Error}}<p id="reviews-error" class="error">{{.}}</p>
{{end}}</section>
</body>
</html>
`))
