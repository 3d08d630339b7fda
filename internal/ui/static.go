package ui

import (
	"io/fs"
	"net/http"
)

// assetHandler serves the front-end from assets, or a placeholder page
// when there is none (a build without the front-end).
func assetHandler(assets fs.FS) http.Handler {
	if assets != nil {
		if _, err := fs.Stat(assets, "index.html"); err == nil {
			return http.FileServerFS(assets)
		}
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write([]byte(placeholderPage))
	})
}

const placeholderPage = `<!doctype html>
<html><head><meta charset="utf-8"><title>Trellis console</title></head>
<body><h1>Trellis console</h1>
<p>This build has no front-end; the API answers under
<a href="/api/graph">/api/graph</a>, <a href="/api/services">/api/services</a>,
<a href="/api/validation">/api/validation</a> and <a href="/api/proxies">/api/proxies</a>.</p>
</body></html>
`
