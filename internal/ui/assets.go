package ui

import (
	"embed"
	"io/fs"
)

// The console front-end, built from internal/ui/web/src by `make ui` and
// committed, so `go build` and `go run ./cmd/trellis up` work from a fresh
// clone without Node.js (make test checks the committed bundle matches its
// sources). See internal/ui/web/README.md.
//
//go:embed web/dist
var dist embed.FS

// Assets is the built console (index.html, app.js, app.css), rooted at
// web/dist, for the server to serve at "/".
func Assets() fs.FS {
	sub, err := fs.Sub(dist, "web/dist")
	if err != nil {
		// fs.Sub fails only for an invalid path; this one is a constant.
		panic(err)
	}
	return sub
}
