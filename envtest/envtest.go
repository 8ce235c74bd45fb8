// Package envtest is the one place test suites get a control plane from: a thin layer
// over controller-runtime's envtest that finds the locally built kube-apiserver and etcd
// (hack/k8s-bins.sh), starts them, and hands out a client and a kubeconfig.
//
// The package is named testenv so that callers need not alias controller-runtime's envtest.
package testenv

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// ErrNoAssets is returned when kube-apiserver and etcd cannot be found.
var ErrNoAssets = errors.New("envtest binaries not found: run `make test` (it builds them with hack/k8s-bins.sh) " +
	"or export KUBEBUILDER_ASSETS=$(hack/k8s-bins.sh)")

// Env is a running control plane.
type Env struct {
	env        *envtest.Environment
	Config     *rest.Config
	Client     client.Client
	Kubeconfig string // path to an admin kubeconfig file
	// CACertFile and CAKeyFile are the client CA's pair (StartWith with SigningCA).
	CACertFile, CAKeyFile string
}

// AssetsDir returns the folder holding kube-apiserver and etcd: $KUBEBUILDER_ASSETS, or
// the default cache folder hack/k8s-bins.sh builds into.
func AssetsDir() (string, error) {
	dirs := []string{os.Getenv("KUBEBUILDER_ASSETS")}
	if home, err := os.UserHomeDir(); err == nil {
		cache := os.Getenv("NK_CACHE")
		if cache == "" {
			cache = filepath.Join(home, ".cache", "nodekeeper")
		}
		matches, _ := filepath.Glob(filepath.Join(cache, "k8s", "v*", "bin"))
		dirs = append(dirs, matches...)
	}
	for _, d := range dirs {
		if d == "" {
			continue
		}
		if isExec(filepath.Join(d, "kube-apiserver")) && isExec(filepath.Join(d, "etcd")) {
			return d, nil
		}
	}
	return "", ErrNoAssets
}

func isExec(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode()&0o111 != 0
}

// Start starts etcd and kube-apiserver on loopback with random ports.
func Start() (*Env, error) { return StartWith(Options{}) }

// StartWith is Start with options.
func StartWith(o Options) (*Env, error) {
	dir, err := AssetsDir()
	if err != nil {
		return nil, err
	}
	e := &envtest.Environment{BinaryAssetsDirectory: dir}
	var ca *caAuthn
	if o.SigningCA {
		if ca, err = newCAAuthn(); err != nil {
			return nil, err
		}
		e.ControlPlane.GetAPIServer().SecureServing.Authn = ca
	}
	for k, v := range o.APIServerArgs {
		e.ControlPlane.GetAPIServer().Configure().Set(k, v)
	}
	// authorize and admit nodes as a real cluster does (kubeadm's defaults), so that
	// agents running as system:node:<name> meet the Node authorizer's and the
	// NodeRestriction plugin's limits; other users are unaffected
	e.ControlPlane.GetAPIServer().Configure().
		Set("authorization-mode", "Node,RBAC").
		Set("enable-admission-plugins", "NodeRestriction")
	cfg, err := e.Start()
	if err != nil {
		return nil, fmt.Errorf("starting control plane from %s: %w", dir, err)
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme.Scheme})
	if err != nil {
		_ = e.Stop()
		return nil, fmt.Errorf("building client: %w", err)
	}
	env := &Env{env: e, Config: cfg, Client: c}
	if ca != nil {
		env.CACertFile, env.CAKeyFile = ca.CertFile(), ca.KeyFile()
	}
	user, err := e.AddUser(envtest.User{Name: "envtest-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		_ = e.Stop()
		return nil, fmt.Errorf("adding admin user: %w", err)
	}
	kc, err := user.KubeConfig()
	if err != nil {
		_ = e.Stop()
		return nil, fmt.Errorf("writing kubeconfig: %w", err)
	}
	f, err := os.CreateTemp("", "nodekeeper-envtest-*.kubeconfig")
	if err != nil {
		_ = e.Stop()
		return nil, err
	}
	if _, err := f.Write(kc); err != nil {
		_ = e.Stop()
		return nil, err
	}
	_ = f.Close()
	env.Kubeconfig = f.Name()
	return env, nil
}

// UserConfig returns a client configuration for a user of the control plane (a client
// certificate with name and groups): e.g. "system:node:<node>" in "system:nodes" for
// an agent under the Node authorizer.
func (e *Env) UserConfig(name string, groups ...string) (*rest.Config, error) {
	u, err := e.env.AddUser(envtest.User{Name: name, Groups: groups}, nil)
	if err != nil {
		return nil, fmt.Errorf("adding user %s: %w", name, err)
	}
	return u.Config(), nil
}

// Stop stops the control plane and removes the kubeconfig.
func (e *Env) Stop() error {
	if e.Kubeconfig != "" {
		_ = os.Remove(e.Kubeconfig)
	}
	return e.env.Stop()
}
