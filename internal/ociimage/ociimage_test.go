package ociimage

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

func build(t *testing.T, dir string) ([]byte, string) {
	t.Helper()
	t0 := time.Unix(1700000000, 0)
	l1, err := Layer([]Entry{
		{Path: "/usr/sbin/tool", Source: filepath.Join(dir, "tool")},
		{Path: "/lib", Link: "usr/lib"},
		{Path: "/run", Dir: true},
		{Path: "/etc/protocols", Data: []byte("tcp 6 TCP\n")},
	}, t0)
	if err != nil {
		t.Fatal(err)
	}
	l2, err := Layer([]Entry{{Path: "/usr/local/bin/agent", Data: []byte("#!agent"), Mode: 0o755}}, t0)
	if err != nil {
		t.Fatal(err)
	}
	img, err := Image(Config{Architecture: "amd64", OS: "linux", Entrypoint: []string{"/usr/local/bin/agent"},
		Env: []string{"PATH=/usr/sbin"}, Labels: map[string]string{"k": "v"}, Created: t0}, l1, l2)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := WriteArchive(&buf, img, "docker.io/nodekeeper/nodekeeper:v1", t0); err != nil {
		t.Fatal(err)
	}
	d, _ := img.Digest()
	return buf.Bytes(), d.String()
}

func files(t *testing.T, r io.Reader) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		switch h.Typeflag {
		case tar.TypeSymlink:
			b = []byte("-> " + h.Linkname)
		case tar.TypeDir:
			b = []byte("dir")
		}
		if h.Uid != 0 || h.Gid != 0 || (!h.ModTime.IsZero() && h.ModTime.Unix() != 1700000000) {
			t.Errorf("%s: uid %d gid %d mtime %v", h.Name, h.Uid, h.Gid, h.ModTime)
		}
		out[h.Name] = b
	}
}

// The archive is an OCI layout (named for containerd) and a docker-save archive at once,
// and the same inputs give the same bytes.
func TestArchive(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "tool"), []byte("ELF"), 0o755); err != nil {
		t.Fatal(err)
	}
	a, digest := build(t, dir)
	b, _ := build(t, dir)
	if !bytes.Equal(a, b) {
		t.Error("two builds of the same inputs differ")
	}
	fs := files(t, bytes.NewReader(a))
	if string(fs["oci-layout"]) != `{"imageLayoutVersion":"1.0.0"}` {
		t.Errorf("oci-layout %q", fs["oci-layout"])
	}
	var index struct {
		Manifests []struct {
			Digest      string            `json:"digest"`
			Annotations map[string]string `json:"annotations"`
		} `json:"manifests"`
	}
	if err := json.Unmarshal(fs["index.json"], &index); err != nil {
		t.Fatal(err)
	}
	if len(index.Manifests) != 1 || index.Manifests[0].Digest != digest ||
		index.Manifests[0].Annotations["io.containerd.image.name"] != "docker.io/nodekeeper/nodekeeper:v1" {
		t.Errorf("index.json %+v (image %s)", index, digest)
	}
	var docker []struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	if err := json.Unmarshal(fs["manifest.json"], &docker); err != nil {
		t.Fatal(err)
	}
	if len(docker) != 1 || !reflect.DeepEqual(docker[0].RepoTags, []string{"nodekeeper/nodekeeper:v1"}) || len(docker[0].Layers) != 2 {
		t.Fatalf("manifest.json %+v", docker)
	}
	var cfg struct {
		Architecture, OS string
		Config           struct {
			Entrypoint, Env []string
			Labels          map[string]string
		}
		Rootfs struct {
			DiffIDs []string `json:"diff_ids"`
		}
	}
	if err := json.Unmarshal(fs[docker[0].Config], &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Architecture != "amd64" || cfg.OS != "linux" || cfg.Config.Entrypoint[0] != "/usr/local/bin/agent" ||
		cfg.Config.Labels["k"] != "v" || len(cfg.Rootfs.DiffIDs) != 2 {
		t.Errorf("config %+v", cfg)
	}
	// the first layer: parents made, entries as given, content from the source file
	zr, err := gzip.NewReader(bytes.NewReader(fs[docker[0].Layers[0]]))
	if err != nil {
		t.Fatal(err)
	}
	l := files(t, zr)
	want := map[string]string{"etc/": "dir", "etc/protocols": "tcp 6 TCP\n", "lib": "-> usr/lib", "run/": "dir",
		"usr/": "dir", "usr/sbin/": "dir", "usr/sbin/tool": "ELF"}
	got := map[string]string{}
	for k, v := range l {
		got[k] = string(v)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("layer 1\n got %v\nwant %v", got, want)
	}
}
