package credentials

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

// PulledRecords remember which credentials pulled each image, so that an image a pod
// pulled with its pull secret is not handed to a pod that could not pull it
// (upstream's KubeletEnsureSecretPulledImages, beta and on by default since 1.35, with
// its default imagePullCredentialsVerificationPolicy NeverVerifyPreloadedImages:
// pkg/kubelet/images/pullmanager). For an image already present and a pull policy that
// would not pull:
//   - an image the agent never pulled (preloaded) is used;
//   - an image pulled without credentials or with the node's own is used by every pod;
//   - an image pulled with a pull secret is used by a pod whose secrets include that
//     secret (same namespace, name and UID) or the same credentials (hash); any other
//     pod pulls it with its own credentials first, and fails as the registry says.
//
// Records are kept by image ID (the runtime's image reference), each per repository
// (the image name without tag or digest), and written to File when set.
type PulledRecords struct {
	// File keeps the records across restarts ("" : in memory only).
	File string
	// Policy is upstream's imagePullCredentialsVerificationPolicy: NeverVerify,
	// NeverVerifyPreloadedImages (the default, also for ""), NeverVerifyAllowlistedImages
	// (every image but Allowlist's is verified) or AlwaysVerify (preloaded images too).
	Policy string
	// Allowlist is preloadedImagesVerificationAllowlist: image names without tag or
	// digest, or prefixes ending in "/*".
	Allowlist []string

	mu     sync.Mutex
	loaded bool
	recs   map[string]map[string]*repoCredentials // image ID -> repository -> credentials
}

type repoCredentials struct {
	// NodePodsAccessible: pulled anonymously or with the node's credentials.
	NodePodsAccessible bool        `json:"nodePodsAccessible,omitempty"`
	Secrets            []SecretRef `json:"kubernetesSecrets,omitempty"`
}

func (p *PulledRecords) load() {
	if p.loaded {
		return
	}
	p.loaded = true
	p.recs = map[string]map[string]*repoCredentials{}
	if p.File == "" {
		return
	}
	if b, err := os.ReadFile(p.File); err == nil {
		_ = json.Unmarshal(b, &p.recs)
		if p.recs == nil {
			p.recs = map[string]map[string]*repoCredentials{}
		}
	}
}

func (p *PulledRecords) save() error {
	if p.File == "" {
		return nil
	}
	b, err := json.Marshal(p.recs)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(p.File), 0o700); err != nil {
		return err
	}
	tmp := p.File + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		_ = os.Remove(tmp) // a full disk: the records file is kept as it was
		return err
	}
	return os.Rename(tmp, p.File)
}

// Record notes that imageID was pulled for image with used (nil: without credentials
// or with the node's own).
func (p *PulledRecords) Record(imageID, image string, used *Credential) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.load()
	repo := Repository(image)
	byRepo := p.recs[imageID]
	if byRepo == nil {
		byRepo = map[string]*repoCredentials{}
		p.recs[imageID] = byRepo
	}
	rc := byRepo[repo]
	if rc == nil {
		rc = &repoCredentials{}
		byRepo[repo] = rc
	}
	if used == nil || used.Source == nil {
		if rc.NodePodsAccessible {
			return nil
		}
		rc.NodePodsAccessible = true
		return p.save()
	}
	for _, s := range rc.Secrets {
		if s == *used.Source {
			return nil
		}
	}
	rc.Secrets = append(rc.Secrets, *used.Source)
	return p.save()
}

// MustPull tells whether a pod with podCreds (its pull secrets' matches for image) has to
// pull imageID, present on the node, before using it.
func (p *PulledRecords) MustPull(imageID, image string, podCreds []Credential) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.load()
	byRepo, pulled := p.recs[imageID]
	var verify bool
	switch p.Policy {
	case "NeverVerify":
		verify = false
	case "NeverVerifyAllowlistedImages":
		verify = !allowlisted(p.Allowlist, image)
	case "AlwaysVerify":
		verify = true
	default: // NeverVerifyPreloadedImages: only what the agent pulled
		verify = pulled
	}
	if !verify {
		return false
	}
	if !pulled {
		return true // no record of credentials for it: they must be shown
	}
	rc := byRepo[Repository(image)]
	if rc == nil {
		return true // pulled by the agent, but never under this name
	}
	if rc.NodePodsAccessible {
		return false
	}
	for _, c := range podCreds {
		if c.Source == nil {
			continue
		}
		for _, s := range rc.Secrets {
			sameSecret := s.Namespace == c.Source.Namespace && s.Name == c.Source.Name && s.UID == c.Source.UID
			if sameSecret || (s.CredentialHash != "" && s.CredentialHash == c.Source.CredentialHash) {
				return false
			}
		}
	}
	return true
}

// TrimTagDigest is the image name without its tag and digest, as written (upstream's
// trimImageTagDigest).
func TrimTagDigest(image string) string {
	name := image
	if i := strings.Index(name, "@"); i >= 0 {
		name = name[:i]
	}
	if i := strings.LastIndex(name, ":"); i > strings.LastIndex(name, "/") {
		name = name[:i]
	}
	return name
}

func allowlisted(list []string, image string) bool {
	name := TrimTagDigest(image)
	for _, p := range list {
		if strings.HasSuffix(p, "/*") {
			if strings.HasPrefix(name, strings.TrimSuffix(p, "*")) {
				return true
			}
		} else if name == p {
			return true
		}
	}
	return false
}

// ValidateAllowlistPattern is upstream's getAllowlistImagePattern check.
func ValidateAllowlistPattern(p string) error {
	if p != strings.TrimSpace(p) {
		return fmt.Errorf("leading/trailing spaces are not allowed: %s", p)
	}
	trimmed := strings.TrimSuffix(p, "*")
	wildcard := strings.HasSuffix(p, "/*")
	if !wildcard {
		trimmed = p
	}
	switch {
	case trimmed == "":
		return fmt.Errorf("the supplied pattern is too short: %s", p)
	case strings.ContainsRune(trimmed, '*'):
		return fmt.Errorf("not a valid wildcard pattern, only patterns ending with '/*' are allowed: %s", p)
	case wildcard && len(trimmed) == 1:
		return fmt.Errorf("at least registry hostname is required")
	case !wildcard && TrimTagDigest(trimmed) != trimmed:
		return fmt.Errorf("neither tag nor digest is accepted in an image reference: %s", p)
	}
	return nil
}
