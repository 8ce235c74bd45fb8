package credentials

import (
	"path/filepath"
	"testing"
)

func TestPulledRecords(t *testing.T) {
	file := filepath.Join(t.TempDir(), "pulled.json")
	p := &PulledRecords{File: file}
	regcred := &SecretRef{Namespace: "a", Name: "regcred", UID: "u1", CredentialHash: credentialHash("bob", "s3cret")}
	const img = "registry.example.com/team/app:v1"
	if p.MustPull("sha256:pre", img, nil) {
		t.Error("a preloaded image (never pulled by the agent) is not verified")
	}
	if err := p.Record("sha256:priv", img, &Credential{Source: regcred}); err != nil {
		t.Fatal(err)
	}
	if err := p.Record("sha256:pub", "busybox:1.37", nil); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		id    string
		image string
		creds []Credential
		want  bool
	}{
		{"anonymous pull: every pod", "sha256:pub", "busybox:1.37", nil, false},
		{"same image under another tag: same repository", "sha256:pub", "docker.io/library/busybox:other", nil, false},
		{"no secret", "sha256:priv", img, nil, true},
		{"the secret that pulled it", "sha256:priv", img, []Credential{{Source: &SecretRef{Namespace: "a", Name: "regcred", UID: "u1"}}}, false},
		{"another namespace's secret with the same credentials", "sha256:priv", img,
			[]Credential{{Source: &SecretRef{Namespace: "b", Name: "other", UID: "u2", CredentialHash: regcred.CredentialHash}}}, false},
		{"other credentials", "sha256:priv", img, []Credential{{Source: &SecretRef{Namespace: "b", Name: "x", UID: "u3", CredentialHash: "nope"}}}, true},
		{"the node's credentials do not count", "sha256:priv", img, []Credential{{Source: nil}}, true},
		{"pulled, but never under this repository", "sha256:priv", "registry.example.com/other/app:v1", nil, true},
	} {
		if got := p.MustPull(tc.id, tc.image, tc.creds); got != tc.want {
			t.Errorf("%s: MustPull = %v, want %v", tc.name, got, tc.want)
		}
	}
	// kept across restarts
	again := &PulledRecords{File: file}
	if !again.MustPull("sha256:priv", img, nil) || again.MustPull("sha256:pub", "busybox:1.37", nil) {
		t.Error("records not read back from the file")
	}
}

func TestVerificationPolicies(t *testing.T) {
	sec := &SecretRef{Namespace: "a", Name: "s", UID: "u"}
	for _, tc := range []struct {
		policy    string
		allow     []string
		id, image string
		want      bool
	}{
		{"NeverVerify", nil, "sha256:priv", "registry.example.com/team/app:v1", false},
		{"", nil, "sha256:pre", "registry.example.com/team/app:v1", false},
		{"AlwaysVerify", nil, "sha256:pre", "registry.example.com/team/app:v1", true},
		{"AlwaysVerify", nil, "sha256:pub", "busybox:1.37", false}, // pulled anonymously: every pod
		{"NeverVerifyAllowlistedImages", []string{"registry.example.com/team/*"}, "sha256:pre", "registry.example.com/team/app:v1", false},
		{"NeverVerifyAllowlistedImages", []string{"registry.example.com/team/app"}, "sha256:priv", "registry.example.com/team/app:v1", false},
		{"NeverVerifyAllowlistedImages", []string{"registry.example.com/other/*"}, "sha256:pre", "registry.example.com/team/app:v1", true},
	} {
		p := &PulledRecords{Policy: tc.policy, Allowlist: tc.allow}
		if err := p.Record("sha256:priv", "registry.example.com/team/app:v1", &Credential{Source: sec}); err != nil {
			t.Fatal(err)
		}
		if err := p.Record("sha256:pub", "busybox:1.37", nil); err != nil {
			t.Fatal(err)
		}
		if got := p.MustPull(tc.id, tc.image, nil); got != tc.want {
			t.Errorf("%s %v %s %s: MustPull = %v, want %v", tc.policy, tc.allow, tc.id, tc.image, got, tc.want)
		}
	}
	for p, ok := range map[string]bool{"registry.example.com/team/*": true, "registry.example.com/app": true, "/*": false,
		"registry.example.com/app:v1": false, "registry.*/x": false, " a/b": false} {
		if err := ValidateAllowlistPattern(p); (err == nil) != ok {
			t.Errorf("ValidateAllowlistPattern(%q) = %v", p, err)
		}
	}
}
