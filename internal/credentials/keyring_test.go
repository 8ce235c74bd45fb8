package credentials

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

func TestRepository(t *testing.T) {
	for in, want := range map[string]string{
		"busybox":                         "docker.io/library/busybox",
		"busybox:1.37":                    "docker.io/library/busybox",
		"me/app:v1":                       "docker.io/me/app",
		"docker.io/busybox":               "docker.io/library/busybox",
		"index.docker.io/me/app":          "docker.io/me/app",
		"quay.io/coreos/etcd:v3@sha256:0": "quay.io/coreos/etcd",
		"localhost:5000/app:1":            "localhost:5000/app",
		"localhost/app":                   "localhost/app",
		"registry.k8s.io/pause:3.10":      "registry.k8s.io/pause",
	} {
		if got := Repository(in); got != want {
			t.Errorf("Repository(%q) = %q, want %q", in, got, want)
		}
	}
}

// Matching as upstream's keyring tests (pkg/credentialprovider/keyring_test.go).
func TestLookupMatching(t *testing.T) {
	k := &Keyring{}
	k.Add(map[string]Entry{
		"*.gcr.io":                            {Username: "glob"},
		"quay.io":                             {Username: "quay"},
		"quay.io/coreos":                      {Username: "coreos"},
		"https://index.docker.io/v1/":         {Username: "hub"},
		"localhost:5000":                      {Username: "local"},
		"http://registry.example.com/v2/team": {Username: "team"},
	})
	for repo, want := range map[string][]string{
		"us.gcr.io/project/app":         {"glob"},
		"gcr.io/project/app":            nil, // * is one host part
		"quay.io/coreos/etcd":           {"coreos", "quay"},
		"quay.io/other/app":             {"quay"},
		"docker.io/library/busybox":     {"hub"},
		"localhost:5000/app":            {"local"},
		"localhost:5001/app":            nil,
		"registry.example.com/team/app": {"team"},
		"registry.example.com/other":    nil,
	} {
		var got []string
		for _, e := range k.Lookup(repo) {
			got = append(got, e.Username)
		}
		if len(got) != len(want) {
			t.Errorf("Lookup(%s) = %v, want %v", repo, got, want)
			continue
		}
		for i := range got {
			if got[i] != want[i] {
				t.Errorf("Lookup(%s) = %v, want %v", repo, got, want)
			}
		}
	}
}

func TestFromSecretsAndNode(t *testing.T) {
	auth := base64.StdEncoding.EncodeToString([]byte("bob:s3cret"))
	secrets := []corev1.Secret{
		{Type: corev1.SecretTypeDockerConfigJson, Data: map[string][]byte{corev1.DockerConfigJsonKey: []byte(`{"auths":{"localhost:5000":{"auth":"` + auth + `"}}}`)}},
		{Type: corev1.SecretTypeDockercfg, Data: map[string][]byte{corev1.DockerConfigKey: []byte(`{"quay.io":{"username":"q","password":"p"}}`)}},
		{Type: corev1.SecretTypeOpaque, Data: map[string][]byte{"x": []byte("y")}},
	}
	k, err := FromSecrets(secrets)
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "config.json"), []byte(`{"auths":{"localhost:5000":{"username":"node","password":"n"}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	node := NodeKeyring(root)
	got := AuthConfigs("localhost:5000/app:1", k, node)
	if len(got) != 2 || got[0].Username != "bob" || got[0].Password != "s3cret" || got[1].Username != "node" {
		t.Errorf("pod secrets first, then the node's: %+v", got)
	}
	if got := AuthConfigs("quay.io/x/y", k, node); len(got) != 1 || got[0].Username != "q" {
		t.Errorf("dockercfg secret: %+v", got)
	}
	if got := AuthConfigs("busybox", k, node); len(got) != 0 {
		t.Errorf("no credentials for docker.io: %+v", got)
	}
	if _, err := FromSecrets([]corev1.Secret{{Type: corev1.SecretTypeDockerConfigJson, Data: map[string][]byte{corev1.DockerConfigJsonKey: []byte("{")}}}); err == nil {
		t.Error("a malformed secret must be an error")
	}
	if k, _ := FromSecrets(nil); k != nil {
		t.Error("no secrets: no keyring")
	}
}
