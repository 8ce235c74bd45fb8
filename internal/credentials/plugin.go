package credentials

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kubeletconfigv1 "k8s.io/kubelet/config/v1"
	credentialproviderv1 "k8s.io/kubelet/pkg/apis/credentialprovider/v1"
	"sigs.k8s.io/yaml"
)

// Image credential provider plugins, as upstream's pkg/credentialprovider/plugin: a
// CredentialProviderConfig (kubelet.config.k8s.io/v1) names exec plugins in a bin
// folder; a plugin whose matchImages match the image is run with a
// CredentialProviderRequest on stdin and answers a CredentialProviderResponse on stdout.
// Answers are cached by cacheKeyType (Image, Registry, Global) for cacheDuration
// (defaultCacheDuration when the response has none; 0: not cached).

const pluginTimeout = time.Minute

// Plugin is one configured exec provider.
type Plugin struct {
	Config kubeletconfigv1.CredentialProvider
	Path   string // the binary in the bin folder

	mu    sync.Mutex
	cache map[string]cached
	now   func() time.Time
}

type cached struct {
	auth    map[string]Entry
	expires time.Time
}

// Providers are the configured plugins, in upstream's order (by name).
type Providers []*Plugin

// LoadProviders reads a CredentialProviderConfig file and checks it as upstream's
// validateCredentialProviderConfig (names, matchImages, defaultCacheDuration, apiVersion,
// the binary present in binDir). Empty path: none.
func LoadProviders(configPath, binDir string) (Providers, error) {
	if configPath == "" {
		return nil, nil
	}
	b, err := os.ReadFile(configPath)
	if err != nil {
		return nil, fmt.Errorf("reading image credential provider config: %w", err)
	}
	var cfg kubeletconfigv1.CredentialProviderConfig
	if err := yaml.UnmarshalStrict(b, &cfg); err != nil {
		return nil, fmt.Errorf("image credential provider config %s: %w", configPath, err)
	}
	if cfg.Kind != "CredentialProviderConfig" || cfg.APIVersion != kubeletconfigv1.SchemeGroupVersion.String() {
		return nil, fmt.Errorf("image credential provider config %s: want kind CredentialProviderConfig, apiVersion %s, got %q %q", configPath, kubeletconfigv1.SchemeGroupVersion, cfg.Kind, cfg.APIVersion)
	}
	if len(cfg.Providers) == 0 {
		return nil, fmt.Errorf("image credential provider config %s: at least 1 item in plugins is required", configPath)
	}
	var errs []error
	seen := map[string]bool{}
	var out Providers
	for i, p := range cfg.Providers {
		at := fmt.Sprintf("providers[%d]", i)
		switch {
		case p.Name == "" || strings.Contains(p.Name, "/") || p.Name == "." || p.Name == ".." || strings.Contains(p.Name, " "):
			errs = append(errs, fmt.Errorf("%s.name: invalid %q (must be a file name in the bin folder)", at, p.Name))
			continue
		case seen[p.Name]:
			errs = append(errs, fmt.Errorf("%s.name: duplicate %q", at, p.Name))
			continue
		}
		seen[p.Name] = true
		if len(p.MatchImages) == 0 {
			errs = append(errs, fmt.Errorf("%s.matchImages: at least 1 item is required", at))
		}
		for _, m := range p.MatchImages {
			if _, err := schemeless(m); err != nil {
				errs = append(errs, fmt.Errorf("%s.matchImages: %q: %w", at, m, err))
			}
		}
		if p.DefaultCacheDuration == nil {
			errs = append(errs, fmt.Errorf("%s.defaultCacheDuration: required", at))
		} else if p.DefaultCacheDuration.Duration < 0 {
			errs = append(errs, fmt.Errorf("%s.defaultCacheDuration: must be greater than or equal to 0", at))
		}
		if p.APIVersion != credentialproviderv1.SchemeGroupVersion.String() {
			errs = append(errs, fmt.Errorf("%s.apiVersion: %q not supported (supported: %s)", at, p.APIVersion, credentialproviderv1.SchemeGroupVersion))
		}
		if p.TokenAttributes != nil {
			errs = append(errs, fmt.Errorf("%s.tokenAttributes: not supported by nodekeeper (service account tokens for plugins)", at))
		}
		path := filepath.Join(binDir, p.Name)
		if st, err := os.Stat(path); err != nil {
			errs = append(errs, fmt.Errorf("%s: plugin binary: %w", at, err))
		} else if st.IsDir() || st.Mode()&0o111 == 0 {
			errs = append(errs, fmt.Errorf("%s: plugin binary %s is not executable", at, path))
		}
		out = append(out, &Plugin{Config: p, Path: path})
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("image credential provider config %s: %w", configPath, err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Config.Name < out[j].Config.Name })
	return out, nil
}

// Keyring is the credentials the matching plugins give for image (nil: none). A
// plugin that fails is logged by the caller through errs and left out, as upstream
// (the pull goes on without it).
func (ps Providers) Keyring(ctx context.Context, image string) (*Keyring, error) {
	var k *Keyring
	var errs []error
	for _, p := range ps {
		auth, err := p.Provide(ctx, image)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if len(auth) > 0 {
			if k == nil {
				k = &Keyring{}
			}
			k.Add(auth)
		}
	}
	return k, errors.Join(errs...)
}

// Matches says whether the plugin is run for image (upstream's isImageAllowed).
func (p *Plugin) Matches(image string) bool {
	for _, m := range p.Config.MatchImages {
		if urlsMatch(m, image) {
			return true
		}
	}
	return false
}

// cacheKeys are the keys an answer for image may be cached under, in upstream's
// lookup order: image, registry, global.
func cacheKeys(image string) (img, registry, global string) {
	host, _, _ := strings.Cut(image, "/")
	return "image:" + image, "registry:" + host, "global"
}

func (p *Plugin) clock() time.Time {
	if p.now != nil {
		return p.now()
	}
	return time.Now()
}

// Provide runs the plugin for image (or answers from its cache).
func (p *Plugin) Provide(ctx context.Context, image string) (map[string]Entry, error) {
	if !p.Matches(image) {
		return nil, nil
	}
	now := p.clock()
	ik, rk, gk := cacheKeys(image)
	p.mu.Lock()
	for _, key := range []string{ik, rk, gk} {
		if c, ok := p.cache[key]; ok {
			if now.Before(c.expires) {
				p.mu.Unlock()
				return c.auth, nil
			}
			delete(p.cache, key)
		}
	}
	p.mu.Unlock()
	resp, err := p.exec(ctx, image)
	if err != nil {
		return nil, err
	}
	auth := make(map[string]Entry, len(resp.Auth))
	for k, a := range resp.Auth {
		auth[k] = Entry{Username: a.Username, Password: a.Password}
	}
	var key string
	switch resp.CacheKeyType {
	case credentialproviderv1.ImagePluginCacheKeyType:
		key = ik
	case credentialproviderv1.RegistryPluginCacheKeyType:
		key = rk
	case credentialproviderv1.GlobalPluginCacheKeyType:
		key = gk
	default:
		return nil, fmt.Errorf("credential provider plugin %s: invalid cacheKeyType %q (want Image, Registry or Global)", p.Config.Name, resp.CacheKeyType)
	}
	d := p.Config.DefaultCacheDuration.Duration
	if resp.CacheDuration != nil {
		d = resp.CacheDuration.Duration
	}
	if d > 0 {
		p.mu.Lock()
		if p.cache == nil {
			p.cache = map[string]cached{}
		}
		p.cache[key] = cached{auth: auth, expires: now.Add(d)}
		p.mu.Unlock()
	}
	return auth, nil
}

func (p *Plugin) exec(ctx context.Context, image string) (*credentialproviderv1.CredentialProviderResponse, error) {
	req, err := json.Marshal(credentialproviderv1.CredentialProviderRequest{
		TypeMeta: metav1TypeMeta("CredentialProviderRequest"),
		Image:    image,
	})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, pluginTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, p.Path, p.Config.Args...)
	cmd.Env = os.Environ()
	for _, e := range p.Config.Env {
		cmd.Env = append(cmd.Env, e.Name+"="+e.Value)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = bytes.NewReader(req), &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("credential provider plugin %s: %w: %s", p.Config.Name, err, strings.TrimSpace(stderr.String()))
	}
	var resp credentialproviderv1.CredentialProviderResponse
	if err := json.Unmarshal(stdout.Bytes(), &resp); err != nil {
		return nil, fmt.Errorf("credential provider plugin %s: decoding response: %w", p.Config.Name, err)
	}
	if resp.Kind != "CredentialProviderResponse" || resp.APIVersion != p.Config.APIVersion {
		return nil, fmt.Errorf("credential provider plugin %s: response kind %q apiVersion %q, want CredentialProviderResponse %s", p.Config.Name, resp.Kind, resp.APIVersion, p.Config.APIVersion)
	}
	return &resp, nil
}

func metav1TypeMeta(kind string) metav1.TypeMeta {
	return metav1.TypeMeta{Kind: kind, APIVersion: credentialproviderv1.SchemeGroupVersion.String()}
}
