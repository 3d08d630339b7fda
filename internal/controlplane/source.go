package controlplane

import (
	"context"
	"errors"
	"os"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/trellis-mesh/trellis/internal/config"
	"github.com/trellis-mesh/trellis/internal/kubesource"
	"github.com/trellis-mesh/trellis/internal/model"
)

// Source is where Run reads config from: a directory of YAML files or a
// Kubernetes cluster. Watch delivers every accepted config to onConfig and
// every problem to onError (callbacks one at a time), until ctx is done.
type Source interface {
	Watch(ctx context.Context, onConfig func(*model.Config), onError func(error)) error
	String() string // for logs: the directory, or the API server
}

// dirSource is the file source: a rejected directory keeps the last good
// config serving as a whole.
type dirSource string

func (d dirSource) Watch(ctx context.Context, onConfig func(*model.Config), onError func(error)) error {
	return config.Watch(ctx, string(d), onConfig, onError)
}

func (d dirSource) String() string { return string(d) }

// source picks the one source opts name.
func (opts *Options) source(elector *kubesource.Elector) (Source, error) {
	switch {
	case opts.ConfigDir != "" && opts.Kubernetes != nil:
		return nil, errors.New("control plane: a config directory and a Kubernetes cluster are exclusive; give one")
	case opts.Kubernetes != nil:
		return kubesource.New(kubesource.Options{Config: opts.Kubernetes, IstioNamespace: opts.IstioNamespace, Logger: opts.Logger,
			Elector: elector})
	case opts.ConfigDir != "":
		return dirSource(opts.ConfigDir), nil
	}
	return nil, errors.New("control plane: a config directory or a Kubernetes cluster is required")
}

// elector is the leader election of Kubernetes mode; nil without it.
func (opts *Options) elector() (*kubesource.Elector, error) {
	if opts.Kubernetes == nil {
		return nil, nil
	}
	eo := opts.LeaderElection
	eo.Config = opts.Kubernetes
	if eo.Namespace == "" {
		eo.Namespace = os.Getenv("POD_NAMESPACE")
	}
	if eo.Namespace == "" {
		eo.Namespace = opts.IstioNamespace
	}
	if eo.Logger == nil {
		eo.Logger = opts.Logger
	}
	return kubesource.NewElector(eo)
}

// KubernetesConfig is the client config for a cluster: from the kubeconfig
// file at path, or, when path is "", the Pod's own service account
// (in-cluster).
func KubernetesConfig(path string) (*rest.Config, error) {
	if path == "" {
		return rest.InClusterConfig()
	}
	return clientcmd.BuildConfigFromFlags("", path)
}
