// Package ociimage assembles a container image from local files and writes it as one
// tarball that is both an OCI image layout (oci-layout, index.json, blobs/sha256/...) and
// a `docker save` archive (manifest.json with RepoTags), so `ctr images import`, `docker
// load` and `podman load` all take it. No daemon, no registry: layers are deterministic
// tars (sorted entries, fixed times, root-owned), so the same inputs give the same digests.
package ociimage

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Entry is one path in a layer: a regular file (Data, or the content of Source on this
// machine), a symbolic link (Link) or a directory (Dir).
type Entry struct {
	Path   string // absolute path in the image
	Source string // a file on this machine to copy (symlinks followed)
	Data   []byte
	Link   string
	Dir    bool
	Mode   int64 // permission bits; 0 means the source's, or 0644 / 0755 for directories
}

// Layer builds a deterministic layer from entries: parents are added as directories,
// entries sorted by path, every header owned by root with mtime t. A later entry for
// the same path replaces an earlier one.
func Layer(entries []Entry, t time.Time) (v1.Layer, error) {
	b, err := LayerTar(entries, t)
	if err != nil {
		return nil, err
	}
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(b)), nil
	}, tarball.WithMediaType(types.OCILayer))
}

// LayerTar is the uncompressed tar of a layer (see Layer).
func LayerTar(entries []Entry, t time.Time) ([]byte, error) {
	byPath := map[string]Entry{}
	for _, e := range entries {
		p := path.Clean("/" + e.Path)
		if p == "/" {
			continue
		}
		e.Path = p
		byPath[p] = e
		for d := path.Dir(p); d != "/"; d = path.Dir(d) {
			if _, ok := byPath[d]; !ok {
				byPath[d] = Entry{Path: d, Dir: true}
			}
		}
	}
	paths := make([]string, 0, len(byPath))
	for p := range byPath {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, p := range paths {
		e := byPath[p]
		h := &tar.Header{Name: strings.TrimPrefix(p, "/"), ModTime: t, Uname: "root", Gname: "root", Format: tar.FormatPAX}
		var data []byte
		switch {
		case e.Dir:
			h.Typeflag, h.Name, h.Mode = tar.TypeDir, h.Name+"/", orMode(e.Mode, 0o755)
		case e.Link != "":
			h.Typeflag, h.Linkname, h.Mode = tar.TypeSymlink, e.Link, 0o777
		default:
			data = e.Data
			mode := e.Mode
			if e.Source != "" {
				st, err := os.Stat(e.Source)
				if err != nil {
					return nil, err
				}
				if data, err = os.ReadFile(e.Source); err != nil {
					return nil, err
				}
				if mode == 0 {
					mode = int64(st.Mode().Perm())
				}
			}
			h.Typeflag, h.Mode, h.Size = tar.TypeReg, orMode(mode, 0o644), int64(len(data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		if _, err := tw.Write(data); err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func orMode(m, def int64) int64 {
	if m == 0 {
		return def
	}
	return m
}

// Config is the image's runtime configuration.
type Config struct {
	Architecture, OS string
	Entrypoint, Cmd  []string
	Env              []string
	Labels           map[string]string
	Created          time.Time
}

// Image is an OCI image (OCI manifest and config media types) of the layers, in order.
func Image(cfg Config, layers ...v1.Layer) (v1.Image, error) {
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err := mutate.AppendLayers(img, layers...)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.Architecture, cf.OS = cfg.Architecture, cfg.OS
	cf.Created = v1.Time{Time: cfg.Created.UTC()}
	cf.Config.Entrypoint, cf.Config.Cmd, cf.Config.Env, cf.Config.Labels = cfg.Entrypoint, cfg.Cmd, cfg.Env, cfg.Labels
	for i := range cf.History {
		cf.History[i].Created = cf.Created
	}
	return mutate.ConfigFile(img, cf)
}

// WriteArchive writes img, named ref (e.g. docker.io/library/nodekeeper:v1), as an OCI
// layout tarball that also carries docker's manifest.json.
func WriteArchive(w io.Writer, img v1.Image, ref string, t time.Time) error {
	manifest, err := img.RawManifest()
	if err != nil {
		return err
	}
	mdigest, err := img.Digest()
	if err != nil {
		return err
	}
	mt, err := img.MediaType()
	if err != nil {
		return err
	}
	cfgName, err := img.ConfigName()
	if err != nil {
		return err
	}
	cfg, err := img.RawConfigFile()
	if err != nil {
		return err
	}
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return err
	}
	tw := tar.NewWriter(w)
	add := func(name string, b []byte) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(b)), ModTime: t, Typeflag: tar.TypeReg, Format: tar.FormatPAX}); err != nil {
			return err
		}
		_, err := tw.Write(b)
		return err
	}
	blob := func(h v1.Hash) string { return "blobs/" + h.Algorithm + "/" + h.Hex }
	for _, d := range []string{"blobs/", "blobs/sha256/"} {
		if err := tw.WriteHeader(&tar.Header{Name: d, Mode: 0o755, ModTime: t, Typeflag: tar.TypeDir, Format: tar.FormatPAX}); err != nil {
			return err
		}
	}
	if err := add("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
		return err
	}
	index := map[string]any{
		"schemaVersion": 2,
		"mediaType":     string(types.OCIImageIndex),
		"manifests": []map[string]any{{
			"mediaType": string(mt), "digest": mdigest.String(), "size": len(manifest),
			"platform": map[string]string{"architecture": cf.Architecture, "os": cf.OS},
			// containerd names an imported image after io.containerd.image.name; other
			// tools read the OCI ref name
			"annotations": map[string]string{"io.containerd.image.name": ref, "org.opencontainers.image.ref.name": ref},
		}},
	}
	ib, err := json.Marshal(index)
	if err != nil {
		return err
	}
	if err := add("index.json", ib); err != nil {
		return err
	}
	var layerPaths []string
	seen := map[string]bool{}
	for _, l := range layers {
		d, err := l.Digest()
		if err != nil {
			return err
		}
		layerPaths = append(layerPaths, blob(d))
		if seen[d.String()] {
			continue
		}
		seen[d.String()] = true
		rc, err := l.Compressed()
		if err != nil {
			return err
		}
		b, err := io.ReadAll(rc)
		_ = rc.Close()
		if err != nil {
			return err
		}
		if err := add(blob(d), b); err != nil {
			return err
		}
	}
	if err := add(blob(cfgName), cfg); err != nil {
		return err
	}
	if err := add(blob(mdigest), manifest); err != nil {
		return err
	}
	dm, err := json.Marshal([]map[string]any{{"Config": blob(cfgName), "RepoTags": []string{dockerTag(ref)}, "Layers": layerPaths}})
	if err != nil {
		return err
	}
	if err := add("manifest.json", dm); err != nil {
		return err
	}
	return tw.Close()
}

// dockerTag is ref as `docker load` names it: without docker.io/ and library/.
func dockerTag(ref string) string {
	return strings.TrimPrefix(strings.TrimPrefix(ref, "docker.io/"), "library/")
}
