package config

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzLoad feeds arbitrary bytes to the document parser and the mesh
// config parser: whatever the input, they must return documents or
// errors, never panic or hang. Seeds live in testdata/fuzz/FuzzLoad; the
// valid and invalid testdata files are added too.
func FuzzLoad(f *testing.F) {
	for _, pattern := range []string{"testdata/valid/*.yaml", "testdata/invalid/*.yaml", "testdata/*.yaml"} {
		files, _ := filepath.Glob(pattern)
		for _, file := range files {
			data, err := os.ReadFile(file)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(data)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p := parseFile("fuzz.yaml", data)
		for _, d := range p.docs {
			if d.spec == nil || d.meta.Name == "" || d.meta.Kind == "" {
				t.Fatalf("document accepted without kind, name or spec: %+v", d.meta)
			}
		}
		for _, e := range p.errs {
			if e.Reason == "" {
				t.Fatalf("error without a reason: %#v", e)
			}
			_ = e.Error()
		}
		mesh, errs := parseMesh("mesh.yaml", data)
		if (mesh == nil) == (len(errs) == 0) {
			t.Fatalf("parseMesh: got mesh %v and %d errors; want exactly one of them", mesh, len(errs))
		}
	})
}
