package config

import (
	"slices"

	meshv1alpha1 "istio.io/api/mesh/v1alpha1"

	"github.com/trellis-mesh/trellis/internal/model"
)

// Object is one Istio resource read, parsed and validated on its own by
// ParseObject, for sources that hold resources one by one (Kubernetes)
// rather than as a directory.
type Object struct {
	doc *document
}

// Meta is the resource's metadata.
func (o *Object) Meta() model.Meta { return o.doc.meta }

// ParseObject parses one resource (YAML or JSON with apiVersion, kind,
// metadata and spec) with the same rules as files, naming source in its
// errors instead of a file. It returns nil, with no error, for a kind that
// is ignored with a warning. An invalid resource gives a nil Object and an
// errors.Join of *ValidationError.
//
// Lines are left out of errors (Source.Line is 0): they would count lines
// of the serialised object, which the user never wrote.
func ParseObject(source string, data []byte) (*Object, []Warning, error) {
	p := parseFile(source, data)
	for _, e := range p.errs {
		e.Source.Line = 0
	}
	for i := range p.warns {
		p.warns[i].Source.Line = 0
	}
	if len(p.errs) > 0 {
		return nil, p.warns, joinErrors(p.errs)
	}
	switch len(p.docs) {
	case 0:
		return nil, p.warns, nil
	case 1:
		d := p.docs[0]
		d.meta.Source.Line = 0
		return &Object{doc: d}, p.warns, nil
	}
	return nil, p.warns, joinErrors([]*ValidationError{{Source: model.Source{File: source},
		Reason: "holds more than one resource"}})
}

// ParseMesh reads a MeshConfig (the `mesh` key of Istio's istio ConfigMap)
// as a mesh.yaml file is read, naming source in its errors.
func ParseMesh(source string, data []byte) (*meshv1alpha1.MeshConfig, error) {
	m, errs := parseMesh(source, data)
	if len(errs) > 0 {
		return nil, joinErrors(errs)
	}
	return m, nil
}

// Assemble builds a Config from objects that are each valid on their own,
// running the checks across resources that LoadDir runs. Unlike LoadDir,
// which rejects the whole directory, a resource at fault is left out of the
// Config and its problems returned; the rest is served. A nil mesh means
// model.DefaultMesh().
func Assemble(mesh *meshv1alpha1.MeshConfig, objects []*Object) (*model.Config, []Warning, []*ValidationError) {
	if mesh == nil {
		mesh = model.DefaultMesh()
	}
	docs := make([]*document, 0, len(objects))
	for _, o := range objects {
		docs = append(docs, o.doc)
	}
	sortDocs(docs)
	var all []*ValidationError
	// Leaving a resource out can only remove conflicts, but a second pass
	// confirms the rest is clean; each pass removes at least one resource.
	for {
		errs := crossResourceErrors(mesh, docs)
		if len(errs) == 0 {
			break
		}
		bad := map[string]bool{}
		for _, e := range errs {
			e.Source.Line = 0
			bad[e.Kind+" "+e.Namespace+"/"+e.Name] = true
		}
		all = append(all, errs...)
		n := len(docs)
		docs = slices.DeleteFunc(docs, func(d *document) bool { return bad[d.meta.Key()] })
		if len(docs) == n {
			break // an error naming no resource; nothing more to leave out
		}
	}
	warns := danglingRefs(docs)
	for i := range warns {
		warns[i].Source.Line = 0
	}
	return build(mesh, docs), warns, all
}
