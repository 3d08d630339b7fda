package ui

import "io/fs"

// builtinAssets is the front-end built into the binary. It returns nil
// (the placeholder page) until the front-end's assets.go is merged; then
// it returns Assets().
func builtinAssets() fs.FS { return nil }
