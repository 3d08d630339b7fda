package config

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	networking "istio.io/api/networking/v1alpha3"
	networkingv1beta1 "istio.io/api/networking/v1beta1"
	security "istio.io/api/security/v1beta1"
	telemetry "istio.io/api/telemetry/v1alpha1"

	"github.com/trellis-mesh/trellis/internal/model"
)

// LoadDir reads every *.yaml and *.yml file under dir (recursively, skipping
// files and directories whose names start with "."; symlinked files are
// followed, symlinked directories are not) and returns the config they hold.
//
// A file named mesh.yaml (or mesh.yml), at any depth, is the MeshConfig;
// there may be one at most. Without one, model.DefaultMesh() applies. Errors name files as filepath.Join(dir, relative path).
//
// If any resource is invalid, LoadDir returns a nil config and an
// errors.Join of *ValidationError values, one per problem, so the caller
// can keep its last good config. Other errors (an unreadable dir) are
// returned as they are, wrapped. Warnings are returned either way.
func LoadDir(dir string) (*model.Config, []Warning, error) {
	files, err := configFiles(dir)
	if err != nil {
		return nil, nil, err
	}
	return loadFiles(files)
}

// loadFiles parses files (the mesh config among them, if any) into one
// validated Config.
func loadFiles(files []configFile) (*model.Config, []Warning, error) {
	parsed := make([]*cachedFile, 0, len(files))
	for _, f := range files {
		data, err := f.data, error(nil)
		if data == nil {
			data, err = os.ReadFile(f.path)
		}
		if err != nil {
			return nil, nil, fmt.Errorf("read config: %w", err)
		}
		parsed = append(parsed, parseConfigFile(f, data))
	}
	return assemble(parsed, nil)
}

// assemble joins parsed files into one Config, running the checks across
// resources. objs, when not nil, holds the model object of each document
// from an earlier assembly, to be handed out again (DirLoader).
func assemble(files []*cachedFile, objs map[*document]any) (*model.Config, []Warning, error) {
	var (
		docs   []*document
		warns  []Warning
		errs   []*ValidationError
		mesh   = model.DefaultMesh()
		meshAt string
	)
	for _, f := range files {
		if f.mesh {
			if meshAt != "" {
				errs = append(errs, &ValidationError{Source: model.Source{File: f.path}, Kind: meshKind,
					Reason: fmt.Sprintf("only one mesh config file is allowed; %s is also one", meshAt)})
				continue
			}
			meshAt = f.path
			errs = append(errs, f.errs...)
			if f.meshConf != nil {
				mesh = f.meshConf
			}
			continue
		}
		docs = append(docs, f.docs...)
		warns = append(warns, f.warns...)
		errs = append(errs, f.errs...)
	}
	errs = append(errs, crossResourceErrors(mesh, docs)...)
	if len(errs) > 0 {
		return nil, warns, joinErrors(errs)
	}
	warns = append(warns, danglingRefs(docs)...)
	return buildReusing(mesh, docs, objs), warns, nil
}

type configFile struct {
	path string
	mesh bool
	data []byte // nil: read path
}

// LoadDirWithOverride is LoadDir as if the file at path (one LoadDir
// reads, named as LoadDir names it) held data: it checks a change to one
// file against the whole directory before the change is written.
func LoadDirWithOverride(dir, path string, data []byte) (*model.Config, []Warning, error) {
	files, err := configFiles(dir)
	if err != nil {
		return nil, nil, err
	}
	if data == nil {
		data = []byte{} // an empty file, not "read it"
	}
	found := false
	for i := range files {
		if filepath.Clean(files[i].path) == filepath.Clean(path) {
			files[i].data, found = data, true
		}
	}
	if !found {
		return nil, nil, fmt.Errorf("%s is not a config file of %s", path, dir)
	}
	return loadFiles(files)
}

func configFiles(dir string) ([]configFile, error) {
	var out []configFile
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("read config dir: %w", err)
		}
		if path == dir {
			return nil
		}
		if strings.HasPrefix(d.Name(), ".") {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() || !isYAMLName(d.Name()) {
			return nil
		}
		if d.Type()&fs.ModeSymlink != 0 {
			// Kubernetes ConfigMap volumes are symlinks into a dot-dir.
			st, err := os.Stat(path)
			if err != nil {
				return fmt.Errorf("read config dir: %w", err)
			}
			if !st.Mode().IsRegular() {
				return nil
			}
		} else if !d.Type().IsRegular() {
			return nil
		}
		out = append(out, configFile{path: path, mesh: slices.Contains(meshFiles, d.Name())})
		return nil
	})
	return out, err
}

func isYAMLName(name string) bool {
	return strings.HasSuffix(name, ".yaml") || strings.HasSuffix(name, ".yml")
}

// crossResourceErrors are the problems no single resource shows: conflicts
// and references between resources, and to the mesh config.
func crossResourceErrors(mesh *meshv1alpha1.MeshConfig, docs []*document) []*ValidationError {
	errs := crossCheck(docs)
	errs = append(errs, telemetryProviderRefs(mesh, docs)...)
	errs = append(errs, authorizationPolicyRefs(mesh, docs)...)
	return append(errs, peerAuthenticationConflicts(mesh, docs)...)
}

// crossCheck finds problems between resources: duplicate names and hosts
// declared by more than one ServiceEntry.
func crossCheck(docs []*document) []*ValidationError {
	var errs []*ValidationError
	type docKey struct{ kind, namespace, name string }
	seen := make(map[docKey]*document, len(docs))
	for _, d := range docs {
		key := docKey{d.meta.Kind, d.meta.Namespace, d.meta.Name}
		if first, dup := seen[key]; dup {
			errs = append(errs, d.errorAt("metadata.name", d.lineOf("metadata.name"),
				fmt.Sprintf("duplicate %s; first defined at %s", d.meta.Key(), first.meta.Source)))
			continue
		}
		seen[key] = d
	}
	var entries []*document
	for _, d := range docs {
		if _, ok := d.spec.(*networking.ServiceEntry); ok {
			entries = append(entries, d)
		}
	}
	sortDocs(entries)
	hosts := map[string]*document{}
	for _, d := range entries {
		for i, h := range d.spec.(*networking.ServiceEntry).GetHosts() {
			if first, dup := hosts[h]; dup && first != d {
				path := fmt.Sprintf("spec.hosts[%d]", i)
				errs = append(errs, d.errorAt(path, d.lineOf(path),
					fmt.Sprintf("host %q is already declared by %s (%s)", h, first.meta.Key(), first.meta.Source)))
				continue
			}
			hosts[h] = d
		}
	}
	return errs
}

func sortDocs(docs []*document) {
	// Stable by position as the last key: pdqsort, O(n log n), where
	// SortStableFunc's in-place merge is O(n log² n) (thousands of docs on
	// every reload).
	type item struct {
		d *document
		i int
	}
	items := make([]item, len(docs))
	for i, d := range docs {
		items[i] = item{d, i}
	}
	slices.SortFunc(items, func(a, b item) int {
		if c := strings.Compare(a.d.meta.Namespace, b.d.meta.Namespace); c != 0 {
			return c
		}
		if c := strings.Compare(a.d.meta.Name, b.d.meta.Name); c != 0 {
			return c
		}
		return a.i - b.i
	})
	for i, it := range items {
		docs[i] = it.d
	}
}

func build(mesh *meshv1alpha1.MeshConfig, docs []*document) *model.Config {
	return buildReusing(mesh, docs, nil)
}

// buildReusing is build handing out the objects in objs for documents
// built before, and recording the new ones there (when objs is not nil).
func buildReusing(mesh *meshv1alpha1.MeshConfig, docs []*document, objs map[*document]any) *model.Config {
	sortDocs(docs)
	cfg := &model.Config{Mesh: mesh}
	for _, d := range docs {
		obj := objs[d]
		if obj == nil {
			obj = newObject(d)
			if objs != nil {
				objs[d] = obj
			}
		}
		switch o := obj.(type) {
		case *model.VirtualService:
			cfg.VirtualServices = append(cfg.VirtualServices, o)
		case *model.DestinationRule:
			cfg.DestinationRules = append(cfg.DestinationRules, o)
		case *model.ServiceEntry:
			cfg.ServiceEntries = append(cfg.ServiceEntries, o)
		case *model.WorkloadEntry:
			cfg.WorkloadEntries = append(cfg.WorkloadEntries, o)
		case *model.WorkloadGroup:
			cfg.WorkloadGroups = append(cfg.WorkloadGroups, o)
		case *model.Gateway:
			cfg.Gateways = append(cfg.Gateways, o)
		case *model.Sidecar:
			cfg.Sidecars = append(cfg.Sidecars, o)
		case *model.Telemetry:
			cfg.Telemetries = append(cfg.Telemetries, o)
		case *model.PeerAuthentication:
			cfg.PeerAuthentications = append(cfg.PeerAuthentications, o)
		case *model.AuthorizationPolicy:
			cfg.AuthorizationPolicies = append(cfg.AuthorizationPolicies, o)
		case *model.ProxyConfig:
			cfg.ProxyConfigs = append(cfg.ProxyConfigs, o)
		case *model.RequestAuthentication:
			cfg.RequestAuthentications = append(cfg.RequestAuthentications, o)
		}
	}
	return cfg
}

// newObject wraps a document in its model type; nil for a kind the model
// does not hold.
func newObject(d *document) any {
	switch spec := d.spec.(type) {
	case *networking.VirtualService:
		return &model.VirtualService{Meta: d.meta, Spec: spec}
	case *networking.DestinationRule:
		return &model.DestinationRule{Meta: d.meta, Spec: spec}
	case *networking.ServiceEntry:
		return &model.ServiceEntry{Meta: d.meta, Spec: spec}
	case *networking.WorkloadEntry:
		return &model.WorkloadEntry{Meta: d.meta, Spec: spec}
	case *networking.WorkloadGroup:
		return &model.WorkloadGroup{Meta: d.meta, Spec: spec}
	case *networking.Gateway:
		return &model.Gateway{Meta: d.meta, Spec: spec}
	case *networking.Sidecar:
		return &model.Sidecar{Meta: d.meta, Spec: spec}
	case *telemetry.Telemetry:
		return &model.Telemetry{Meta: d.meta, Spec: spec}
	case *security.PeerAuthentication:
		return &model.PeerAuthentication{Meta: d.meta, Spec: spec}
	case *security.AuthorizationPolicy:
		return &model.AuthorizationPolicy{Meta: d.meta, Spec: spec}
	case *networkingv1beta1.ProxyConfig:
		return &model.ProxyConfig{Meta: d.meta, Spec: spec}
	case *security.RequestAuthentication:
		return &model.RequestAuthentication{Meta: d.meta, Spec: spec}
	}
	return nil
}
