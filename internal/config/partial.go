package config

import (
	"fmt"
	"os"
	"slices"

	"github.com/trellis-mesh/trellis/internal/model"
)

// Partial is a directory read by LoadDirPartial: the config its valid
// resources make, and the problems of the others.
type Partial struct {
	Config   *model.Config
	Warnings []Warning
	Errors   []*ValidationError // sorted by file and line
	docs     map[string]*document
}

// FieldLine is the line of a field path ("spec.http[0].route[1]") in the
// resource named key ("Kind namespace/name"), or of its nearest ancestor
// that has one; 0 if the resource is unknown.
func (p *Partial) FieldLine(key, path string) int {
	d := p.docs[key]
	if d == nil {
		return 0
	}
	return d.lineOf(path)
}

// LoadDirPartial reads dir as LoadDir does but, rather than rejecting the
// whole directory for one bad resource, leaves the resources at fault out
// of the Config and returns their problems alongside it (as Assemble does
// for Kubernetes), keeping lines. It is for reporting (`trellis analyze`),
// not serving. An error is returned only when dir cannot be read.
func LoadDirPartial(dir string) (*Partial, error) {
	files, err := configFiles(dir)
	if err != nil {
		return nil, err
	}
	var (
		docs   []*document
		p      = &Partial{docs: map[string]*document{}}
		mesh   = model.DefaultMesh()
		meshAt string
	)
	for _, f := range files {
		data, err := os.ReadFile(f.path)
		if err != nil {
			return nil, fmt.Errorf("read config: %w", err)
		}
		if f.mesh {
			if meshAt != "" {
				p.Errors = append(p.Errors, &ValidationError{Source: model.Source{File: f.path}, Kind: meshKind,
					Reason: fmt.Sprintf("only one mesh config file is allowed; %s is also one", meshAt)})
				continue
			}
			meshAt = f.path
			m, merrs := parseMesh(f.path, data)
			p.Errors = append(p.Errors, merrs...)
			if m != nil && len(merrs) == 0 {
				mesh = m
			}
			continue
		}
		fp := parseFile(f.path, data)
		docs = append(docs, fp.docs...)
		p.Warnings = append(p.Warnings, fp.warns...)
		p.Errors = append(p.Errors, fp.errs...)
	}
	sortDocs(docs)
	for {
		errs := crossResourceErrors(mesh, docs)
		if len(errs) == 0 {
			break
		}
		p.Errors = append(p.Errors, errs...)
		bad := map[string]bool{}
		for _, e := range errs {
			bad[e.Kind+" "+e.Namespace+"/"+e.Name] = true
		}
		n := len(docs)
		docs = slices.DeleteFunc(docs, func(d *document) bool { return bad[d.meta.Key()] })
		if len(docs) == n {
			break
		}
	}
	_ = joinErrors(p.Errors) // sorts them by file and line
	for _, d := range docs {
		if _, dup := p.docs[d.meta.Key()]; !dup {
			p.docs[d.meta.Key()] = d
		}
	}
	p.Config = build(mesh, docs)
	return p, nil
}
