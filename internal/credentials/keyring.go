// Package credentials finds the registry credentials for an image pull as the kubelet
// does (pkg/credentialprovider: BasicDockerKeyring, secrets.MakeDockerKeyring): a pod's
// imagePullSecrets (kubernetes.io/dockerconfigjson and kubernetes.io/dockercfg) first,
// then the node's own docker config (config.json or .dockercfg in the agent's root
// folder, the working folder, $HOME/.docker or /.docker). Entries are matched against the
// image's repository by registry host glob (*.example.com), port and path prefix, the
// more specific first; docker.io images also match credentials for index.docker.io.
package credentials

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

const defaultRegistryHost = "index.docker.io"

// Entry is one registry's credentials in a docker config.
type Entry struct {
	Username, Password, Email string
	// Source is the pull secret the entry came from (nil: the node's own config).
	Source *SecretRef `json:"-"`
}

// SecretRef names a pull secret (upstream's ImagePullSecret coordinates) and the hash
// of the credentials it gave.
type SecretRef struct {
	Namespace      string `json:"namespace"`
	Name           string `json:"name"`
	UID            string `json:"uid"`
	CredentialHash string `json:"credentialHash,omitempty"`
}

// Credential is one set of credentials to try for a pull, with where it came from.
type Credential struct {
	Auth *runtimeapi.AuthConfig
	// Source is the pull secret (nil: the node's own credentials).
	Source *SecretRef
}

// UnmarshalJSON reads username/password, or the auth field (base64 of user:password),
// as upstream's DockerConfigEntry.
func (e *Entry) UnmarshalJSON(data []byte) error {
	var raw struct {
		Username string `json:"username,omitempty"`
		Password string `json:"password,omitempty"`
		Email    string `json:"email,omitempty"`
		Auth     string `json:"auth,omitempty"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return err
	}
	e.Username, e.Password, e.Email = raw.Username, raw.Password, raw.Email
	if raw.Auth == "" {
		return nil
	}
	var dec []byte
	var err error
	if strings.HasSuffix(strings.TrimSpace(raw.Auth), "=") {
		dec, err = base64.StdEncoding.DecodeString(raw.Auth)
	} else {
		dec, err = base64.RawStdEncoding.DecodeString(raw.Auth)
	}
	if err != nil {
		return err
	}
	user, pass, ok := strings.Cut(string(dec), ":")
	if !ok {
		return errors.New("unable to parse auth field, must be formatted as base64(username:password)")
	}
	e.Username, e.Password = user, pass
	return nil
}

// Keyring holds credentials by registry key (host[/path]).
type Keyring struct {
	index []string // reverse-sorted: more specific paths first
	creds map[string][]Entry
}

// Add adds a docker config's entries (keys as in config.json: "https://host/v1/", "host/path").
func (k *Keyring) Add(cfg map[string]Entry) { k.add(cfg, nil) }

func (k *Keyring) add(cfg map[string]Entry, src *SecretRef) {
	if k.creds == nil {
		k.creds = map[string][]Entry{}
	}
	seen := map[string]bool{}
	for _, key := range k.index {
		seen[key] = true
	}
	keys := make([]string, 0, len(cfg))
	for r := range cfg {
		keys = append(keys, r)
	}
	sort.Strings(keys)
	for _, repo := range keys {
		e := cfg[repo]
		if src != nil {
			ref := *src
			ref.CredentialHash = credentialHash(e.Username, e.Password)
			e.Source = &ref
		}
		r := repo
		if !strings.HasPrefix(r, "https://") && !strings.HasPrefix(r, "http://") {
			r = "https://" + r
		}
		u, err := url.Parse(r)
		if err != nil {
			continue
		}
		path := u.Path
		if strings.HasPrefix(path, "/v2/") || strings.HasPrefix(path, "/v1/") {
			path = path[3:]
		}
		key := u.Host
		if path != "" && path != "/" {
			key = u.Host + path
		}
		k.creds[key] = append(k.creds[key], e)
		if !seen[key] {
			seen[key] = true
			k.index = append(k.index, key)
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(k.index)))
}

// Lookup is the credentials for an image's repository (e.g. docker.io/library/busybox).
func (k *Keyring) Lookup(repo string) []Entry {
	if k == nil {
		return nil
	}
	var out []Entry
	for _, key := range k.index {
		if urlsMatch(key, repo) {
			out = append(out, k.creds[key]...)
		}
	}
	if len(out) > 0 {
		return out
	}
	if isDefaultRegistryMatch(repo) {
		return k.creds[defaultRegistryHost]
	}
	return nil
}

func isDefaultRegistryMatch(image string) bool {
	parts := strings.SplitN(image, "/", 2)
	if parts[0] == "" {
		return false
	}
	if len(parts) == 1 {
		return true
	}
	if parts[0] == "docker.io" || parts[0] == "index.docker.io" {
		return true
	}
	return !strings.ContainsAny(parts[0], ".:")
}

func schemeless(s string) (*url.URL, error) {
	u, err := url.Parse("https://" + s)
	if err != nil {
		return nil, err
	}
	u.Scheme = ""
	return u, nil
}

func splitHost(u *url.URL) ([]string, string) {
	host, port, err := net.SplitHostPort(u.Host)
	if err != nil {
		host, port = u.Host, ""
	}
	return strings.Split(host, "."), port
}

// urlsMatch is upstream's URLsMatchStr: same port, same number of host parts each
// matching the glob's, and the glob's path a prefix of the target's.
func urlsMatch(glob, target string) bool {
	g, err := schemeless(glob)
	if err != nil {
		return false
	}
	t, err := schemeless(target)
	if err != nil {
		return false
	}
	gp, gport := splitHost(g)
	tp, tport := splitHost(t)
	if gport != tport || len(gp) != len(tp) || !strings.HasPrefix(t.Path, g.Path) {
		return false
	}
	for i := range gp {
		if ok, err := filepath.Match(gp[i], tp[i]); err != nil || !ok {
			return false
		}
	}
	return true
}

// FromSecrets is the keyring of a pod's pull secrets (nil when none is a docker config
// secret); a secret whose content does not parse is an error, as upstream.
func FromSecrets(secrets []corev1.Secret) (*Keyring, error) {
	k := &Keyring{}
	found := 0
	for _, s := range secrets {
		if b := s.Data[corev1.DockerConfigJsonKey]; s.Type == corev1.SecretTypeDockerConfigJson && len(b) > 0 {
			var cfg struct {
				Auths map[string]Entry `json:"auths"`
			}
			if err := json.Unmarshal(b, &cfg); err != nil {
				return nil, fmt.Errorf("secret %s/%s: %w", s.Namespace, s.Name, err)
			}
			k.add(cfg.Auths, &SecretRef{Namespace: s.Namespace, Name: s.Name, UID: string(s.UID)})
			found++
		} else if b := s.Data[corev1.DockerConfigKey]; s.Type == corev1.SecretTypeDockercfg && len(b) > 0 {
			var cfg map[string]Entry
			if err := json.Unmarshal(b, &cfg); err != nil {
				return nil, fmt.Errorf("secret %s/%s: %w", s.Namespace, s.Name, err)
			}
			k.add(cfg, &SecretRef{Namespace: s.Namespace, Name: s.Name, UID: string(s.UID)})
			found++
		}
	}
	if found == 0 {
		return nil, nil
	}
	return k, nil
}

// NodeKeyring reads the node's docker config as upstream's default keyring does:
// config.json from rootDir, the working folder, $HOME/.docker, /.docker (the first
// found), else .dockercfg from rootDir, the working folder, $HOME, /. Nil when none.
func NodeKeyring(rootDir string) *Keyring {
	home, _ := os.UserHomeDir()
	wd, _ := os.Getwd()
	for _, dir := range []string{rootDir, wd, filepath.Join(home, ".docker"), "/.docker"} {
		if dir == "" {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, "config.json"))
		if err != nil {
			continue
		}
		var cfg struct {
			Auths map[string]Entry `json:"auths"`
		}
		if json.Unmarshal(b, &cfg) == nil {
			k := &Keyring{}
			k.Add(cfg.Auths)
			return k
		}
	}
	for _, dir := range []string{rootDir, wd, home, "/"} {
		if dir == "" {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, ".dockercfg"))
		if err != nil {
			continue
		}
		var cfg map[string]Entry
		if json.Unmarshal(b, &cfg) == nil {
			k := &Keyring{}
			k.Add(cfg)
			return k
		}
	}
	return nil
}

// Repository is the image's repository as the keyring is looked up with (upstream's
// parsers.ParseImageName): tag and digest dropped, docker.io and library/ added as
// docker normalizes names.
func Repository(image string) string {
	name := image
	if i := strings.Index(name, "@"); i >= 0 {
		name = name[:i]
	}
	if i := strings.LastIndex(name, ":"); i > strings.LastIndex(name, "/") {
		name = name[:i]
	}
	first, rest, hasSlash := strings.Cut(name, "/")
	if !hasSlash || (!strings.ContainsAny(first, ".:") && first != "localhost") {
		if !hasSlash {
			return "docker.io/library/" + name
		}
		return "docker.io/" + name
	}
	if first == "index.docker.io" {
		first = "docker.io"
	}
	if first == "docker.io" && !strings.Contains(rest, "/") {
		return "docker.io/library/" + rest
	}
	return first + "/" + rest
}

// AuthConfigs are the CRI credentials to try for image, in order: the pod's secrets'
// matches, then the node's (upstream's UnionDockerKeyring). Empty: pull without.
func AuthConfigs(image string, keyrings ...*Keyring) []*runtimeapi.AuthConfig {
	var out []*runtimeapi.AuthConfig
	for _, c := range Credentials(image, keyrings...) {
		out = append(out, c.Auth)
	}
	return out
}

// Credentials are AuthConfigs with their sources.
func Credentials(image string, keyrings ...*Keyring) []Credential {
	repo := Repository(image)
	var out []Credential
	for _, k := range keyrings {
		for _, e := range k.Lookup(repo) {
			out = append(out, Credential{Auth: &runtimeapi.AuthConfig{Username: e.Username, Password: e.Password}, Source: e.Source})
		}
	}
	return out
}

func credentialHash(user, pass string) string {
	h := sha256.Sum256([]byte(user + ":" + pass))
	return hex.EncodeToString(h[:])
}
