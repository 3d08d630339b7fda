package config

import (
	"cmp"
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
	var (
		docs   []*document
		warns  []Warning
		errs   []*ValidationError
		mesh   = model.DefaultMesh()
		meshAt string
	)
	for _, f := range files {
		data, err := f.data, error(nil)
		if data == nil {
			data, err = os.ReadFile(f.path)
		}
		if err != nil {
			return nil, nil, fmt.Errorf("read config: %w", err)
		}
		if f.mesh {
			if meshAt != "" {
				errs = append(errs, &ValidationError{Source: model.Source{File: f.path}, Kind: meshKind,
					Reason: fmt.Sprintf("only one mesh config file is allowed; %s is also one", meshAt)})
				continue
			}
			meshAt = f.path
			m, merrs := parseMesh(f.path, data)
			errs = append(errs, merrs...)
			if m != nil {
				mesh = m
			}
			continue
		}
		p := parseFile(f.path, data)
		docs = append(docs, p.docs...)
		warns = append(warns, p.warns...)
		errs = append(errs, p.errs...)
	}
	errs = append(errs, crossResourceErrors(mesh, docs)...)
	if len(errs) > 0 {
		return nil, warns, joinErrors(errs)
	}
	warns = append(warns, danglingRefs(docs)...)
	return build(mesh, docs), warns, nil
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
	seen := map[string]*document{}
	for _, d := range docs {
		key := d.meta.Key()
		if first, dup := seen[key]; dup {
			errs = append(errs, d.errorAt("metadata.name", d.lineOf("metadata.name"),
				fmt.Sprintf("duplicate %s; first defined at %s", key, first.meta.Source)))
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
	slices.SortStableFunc(docs, func(a, b *document) int {
		return cmp.Or(cmp.Compare(a.meta.Namespace, b.meta.Namespace), cmp.Compare(a.meta.Name, b.meta.Name))
	})
}

func build(mesh *meshv1alpha1.MeshConfig, docs []*document) *model.Config {
	sortDocs(docs)
	cfg := &model.Config{Mesh: mesh}
	for _, d := range docs {
		switch spec := d.spec.(type) {
		case *networking.VirtualService:
			cfg.VirtualServices = append(cfg.VirtualServices, &model.VirtualService{Meta: d.meta, Spec: spec})
		case *networking.DestinationRule:
			cfg.DestinationRules = append(cfg.DestinationRules, &model.DestinationRule{Meta: d.meta, Spec: spec})
		case *networking.ServiceEntry:
			cfg.ServiceEntries = append(cfg.ServiceEntries, &model.ServiceEntry{Meta: d.meta, Spec: spec})
		case *networking.WorkloadEntry:
			cfg.WorkloadEntries = append(cfg.WorkloadEntries, &model.WorkloadEntry{Meta: d.meta, Spec: spec})
		case *networking.WorkloadGroup:
			cfg.WorkloadGroups = append(cfg.WorkloadGroups, &model.WorkloadGroup{Meta: d.meta, Spec: spec})
		case *networking.Gateway:
			cfg.Gateways = append(cfg.Gateways, &model.Gateway{Meta: d.meta, Spec: spec})
		case *networking.Sidecar:
			cfg.Sidecars = append(cfg.Sidecars, &model.Sidecar{Meta: d.meta, Spec: spec})
		case *telemetry.Telemetry:
			cfg.Telemetries = append(cfg.Telemetries, &model.Telemetry{Meta: d.meta, Spec: spec})
		case *security.PeerAuthentication:
			cfg.PeerAuthentications = append(cfg.PeerAuthentications, &model.PeerAuthentication{Meta: d.meta, Spec: spec})
		case *security.AuthorizationPolicy:
			cfg.AuthorizationPolicies = append(cfg.AuthorizationPolicies, &model.AuthorizationPolicy{Meta: d.meta, Spec: spec})
		case *networkingv1beta1.ProxyConfig:
			cfg.ProxyConfigs = append(cfg.ProxyConfigs, &model.ProxyConfig{Meta: d.meta, Spec: spec})
		case *security.RequestAuthentication:
			cfg.RequestAuthentications = append(cfg.RequestAuthentications, &model.RequestAuthentication{Meta: d.meta, Spec: spec})
		}
	}
	return cfg
}
