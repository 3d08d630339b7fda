package install

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/trellis-mesh/trellis/internal/security/ca"
)

// ErrNoCARoot is CABundleFromDir's error for a directory without a root.
var ErrNoCARoot = errors.New("no CA root")

// CABundleFromDir returns the root certificate of the CA kept in dir: the
// root-cert.pem of Istio's cacerts layout, else the ca-cert.pem of the
// self-signed root `trellis controlplane` creates in its --ca-dir.
func CABundleFromDir(dir string) ([]byte, error) {
	for _, name := range []string{ca.RootCertFile, ca.CACertFile} {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err == nil {
			return data, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("CA bundle: %w", err)
		}
	}
	return nil, fmt.Errorf("CA bundle: %w in %s (neither %s nor %s): pass --ca-bundle FILE, or no CA flag at all for the control plane to fill in the caBundle",
		ErrNoCARoot, dir, ca.RootCertFile, ca.CACertFile)
}
