package ui

import "io/fs"

// builtinAssets is the front-end built into the binary (assets.go).
func builtinAssets() fs.FS { return Assets() }
