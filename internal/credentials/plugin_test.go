package credentials

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writePlugin writes a shell plugin that counts its runs in dir/count and answers resp.
func writePlugin(t *testing.T, dir, name, resp string) {
	t.Helper()
	script := "#!/bin/sh\ncat > " + filepath.Join(dir, name+".req") + "\necho x >> " + filepath.Join(dir, name+".count") + "\ncat <<'END'\n" + resp + "\nEND\n"
	if err := os.WriteFile(filepath.Join(dir, name), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
}

func runs(t *testing.T, dir, name string) int {
	b, err := os.ReadFile(filepath.Join(dir, name+".count"))
	if os.IsNotExist(err) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), "x")
}

func writeConfig(t *testing.T, dir, body string) string {
	p := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

const configHead = "apiVersion: kubelet.config.k8s.io/v1\nkind: CredentialProviderConfig\nproviders:\n"

func TestProvidersMatchAndCache(t *testing.T) {
	resp := func(keyType, dur string) string {
		s := `{"apiVersion":"credentialprovider.kubelet.k8s.io/v1","kind":"CredentialProviderResponse","cacheKeyType":"` + keyType + `",`
		if dur != "" {
			s += `"cacheDuration":"` + dur + `",`
		}
		return s + `"auth":{"*.registry.example":{"username":"u","password":"p"}}}`
	}
	tests := []struct {
		name, keyType, respDur, defDur string
		images                         []string // pulled in order
		wantRuns                       int
		wantAuth                       []bool
	}{
		{"image key caches per image", "Image", "", "1h",
			[]string{"a.registry.example/x:1", "a.registry.example/x:1", "a.registry.example/y:1"}, 2, []bool{true, true, true}},
		{"registry key caches per host", "Registry", "", "1h",
			[]string{"a.registry.example/x:1", "a.registry.example/y:1", "b.registry.example/y:1"}, 2, []bool{true, true, true}},
		{"global key caches for all", "Global", "", "1h",
			[]string{"a.registry.example/x:1", "b.registry.example/y:1"}, 1, []bool{true, true}},
		{"response duration 0 disables the cache", "Global", "0s", "1h",
			[]string{"a.registry.example/x:1", "a.registry.example/x:1"}, 2, []bool{true, true}},
		{"default duration 0 disables the cache", "Global", "", "0s",
			[]string{"a.registry.example/x:1", "a.registry.example/x:1"}, 2, []bool{true, true}},
		{"unmatched image does not run the plugin", "Global", "", "1h",
			[]string{"docker.io/library/busybox:1", "registry.example/x:1"}, 0, []bool{false, false}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			writePlugin(t, dir, "prov", resp(tt.keyType, tt.respDur))
			cfg := writeConfig(t, dir, configHead+"- name: prov\n  apiVersion: credentialprovider.kubelet.k8s.io/v1\n  matchImages: [\"*.registry.example\"]\n  defaultCacheDuration: "+tt.defDur+"\n")
			ps, err := LoadProviders(cfg, dir)
			if err != nil {
				t.Fatal(err)
			}
			for i, img := range tt.images {
				k, err := ps.Keyring(context.Background(), img)
				if err != nil {
					t.Fatal(err)
				}
				got := Credentials(img, k)
				if (len(got) == 1 && got[0].Auth.Username == "u" && got[0].Auth.Password == "p") != tt.wantAuth[i] {
					t.Errorf("%s: credentials %v, want auth %v", img, got, tt.wantAuth[i])
				}
			}
			if n := runs(t, dir, "prov"); n != tt.wantRuns {
				t.Errorf("plugin ran %d times, want %d", n, tt.wantRuns)
			}
		})
	}
}

func TestProviderCacheExpires(t *testing.T) {
	dir := t.TempDir()
	writePlugin(t, dir, "prov", `{"apiVersion":"credentialprovider.kubelet.k8s.io/v1","kind":"CredentialProviderResponse","cacheKeyType":"Image","cacheDuration":"10m","auth":{"reg.example":{"username":"u","password":"p"}}}`)
	ps, err := LoadProviders(writeConfig(t, dir, configHead+"- name: prov\n  apiVersion: credentialprovider.kubelet.k8s.io/v1\n  matchImages: [\"reg.example\"]\n  defaultCacheDuration: 1h\n"), dir)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1000, 0)
	ps[0].now = func() time.Time { return now }
	for _, step := range []time.Duration{0, 9 * time.Minute, 2 * time.Minute} {
		now = now.Add(step)
		if _, err := ps[0].Provide(context.Background(), "reg.example/app:1"); err != nil {
			t.Fatal(err)
		}
	}
	if n := runs(t, dir, "prov"); n != 2 {
		t.Errorf("plugin ran %d times, want 2 (cached for 10m, then expired)", n)
	}
	req, err := os.ReadFile(filepath.Join(dir, "prov.req"))
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"kind":"CredentialProviderRequest","apiVersion":"credentialprovider.kubelet.k8s.io/v1","image":"reg.example/app:1"}`; strings.TrimSpace(string(req)) != want {
		t.Errorf("request %s, want %s", req, want)
	}
}

func TestLoadProvidersErrors(t *testing.T) {
	dir := t.TempDir()
	writePlugin(t, dir, "prov", "{}")
	tests := []struct{ name, body, want string }{
		{"no providers", "apiVersion: kubelet.config.k8s.io/v1\nkind: CredentialProviderConfig\nproviders: []\n", "at least 1 item"},
		{"wrong kind", "apiVersion: kubelet.config.k8s.io/v1\nkind: Foo\nproviders: []\n", "want kind CredentialProviderConfig"},
		{"unknown field", configHead + "- name: prov\n  bogus: 1\n", "bogus"},
		{"missing binary", configHead + "- name: nope\n  apiVersion: credentialprovider.kubelet.k8s.io/v1\n  matchImages: [a.example]\n  defaultCacheDuration: 1m\n", "plugin binary"},
		{"no matchImages", configHead + "- name: prov\n  apiVersion: credentialprovider.kubelet.k8s.io/v1\n  defaultCacheDuration: 1m\n", "matchImages"},
		{"no defaultCacheDuration", configHead + "- name: prov\n  apiVersion: credentialprovider.kubelet.k8s.io/v1\n  matchImages: [a.example]\n", "defaultCacheDuration: required"},
		{"bad apiVersion", configHead + "- name: prov\n  apiVersion: credentialprovider.kubelet.k8s.io/v9\n  matchImages: [a.example]\n  defaultCacheDuration: 1m\n", "apiVersion"},
		{"path in name", configHead + "- name: ../prov\n  apiVersion: credentialprovider.kubelet.k8s.io/v1\n  matchImages: [a.example]\n  defaultCacheDuration: 1m\n", "invalid"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := LoadProviders(writeConfig(t, dir, tt.body), dir)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestProviderBadResponse(t *testing.T) {
	dir := t.TempDir()
	writePlugin(t, dir, "prov", `{"apiVersion":"credentialprovider.kubelet.k8s.io/v1","kind":"CredentialProviderResponse","cacheKeyType":"Bogus"}`)
	ps, err := LoadProviders(writeConfig(t, dir, configHead+"- name: prov\n  apiVersion: credentialprovider.kubelet.k8s.io/v1\n  matchImages: [reg.example]\n  defaultCacheDuration: 1m\n"), dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ps.Keyring(context.Background(), "reg.example/a"); err == nil || !strings.Contains(err.Error(), "cacheKeyType") {
		t.Errorf("error %v, want invalid cacheKeyType", err)
	}
}
