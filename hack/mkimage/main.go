// Command mkimage writes a container image tarball (an OCI layout that is also a `docker
// save` archive, see internal/ociimage) from a spec of local files; hack/image.sh (make
// image) writes the spec for the nodekeeper image.
//
// Spec lines (one entry each; # comments):
//
//	layer                    start a new layer (the first starts implicitly)
//	file HOSTPATH [PATH]     copy a file of this machine (symlinks followed) to PATH (default HOSTPATH)
//	link PATH TARGET         a symbolic link
//	dir PATH                 a directory
package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/nodekeeper/nodekeeper/internal/ociimage"
)

type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(s string) error { *l = append(*l, s); return nil }

func main() {
	var (
		spec, ref, out, entrypoint, created string
		labels, env                         list
	)
	flag.StringVar(&spec, "spec", "", "the spec file")
	flag.StringVar(&ref, "ref", "", "the image's name, e.g. docker.io/nodekeeper/nodekeeper:v0.1.0")
	flag.StringVar(&out, "out", "", "the tarball to write")
	flag.StringVar(&entrypoint, "entrypoint", "", "entrypoint, comma-separated")
	flag.StringVar(&created, "created", "0", "creation time: seconds since the epoch")
	flag.Var(&labels, "label", "k=v label (repeatable)")
	flag.Var(&env, "env", "K=V environment variable (repeatable)")
	flag.Parse()
	if err := run(spec, ref, out, entrypoint, created, labels, env); err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
}

func run(spec, ref, out, entrypoint, created string, labels, env []string) error {
	if spec == "" || ref == "" || out == "" {
		return fmt.Errorf("--spec, --ref and --out are required")
	}
	secs, err := strconv.ParseInt(created, 10, 64)
	if err != nil {
		return fmt.Errorf("--created: %w", err)
	}
	t := time.Unix(secs, 0).UTC()
	layersEntries, err := parseSpec(spec)
	if err != nil {
		return err
	}
	var layers []v1.Layer
	for _, es := range layersEntries {
		l, err := ociimage.Layer(es, t)
		if err != nil {
			return err
		}
		layers = append(layers, l)
	}
	cfg := ociimage.Config{Architecture: runtime.GOARCH, OS: "linux", Env: env, Created: t, Labels: map[string]string{}}
	if entrypoint != "" {
		cfg.Entrypoint = strings.Split(entrypoint, ",")
	}
	for _, kv := range labels {
		k, v, _ := strings.Cut(kv, "=")
		cfg.Labels[k] = v
	}
	img, err := ociimage.Image(cfg, layers...)
	if err != nil {
		return err
	}
	tmp := out + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if err := ociimage.WriteArchive(f, img, ref, t); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	d, _ := img.Digest()
	fmt.Fprintf(os.Stderr, "mkimage: %s %s (%d layers)\n", ref, d, len(layers))
	return os.Rename(tmp, out)
}

func parseSpec(p string) ([][]ociimage.Entry, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var layers [][]ociimage.Entry
	var cur []ociimage.Entry
	sc := bufio.NewScanner(f)
	n := 0
	for sc.Scan() {
		n++
		fs := strings.Fields(sc.Text())
		if len(fs) == 0 || strings.HasPrefix(fs[0], "#") {
			continue
		}
		switch {
		case fs[0] == "layer" && len(fs) == 1:
			if len(cur) > 0 {
				layers = append(layers, cur)
			}
			cur = nil
		case fs[0] == "file" && (len(fs) == 2 || len(fs) == 3):
			dst := fs[1]
			if len(fs) == 3 {
				dst = fs[2]
			}
			cur = append(cur, ociimage.Entry{Path: dst, Source: fs[1]})
		case fs[0] == "link" && len(fs) == 3:
			cur = append(cur, ociimage.Entry{Path: fs[1], Link: fs[2]})
		case fs[0] == "dir" && len(fs) == 2:
			cur = append(cur, ociimage.Entry{Path: fs[1], Dir: true})
		default:
			return nil, fmt.Errorf("%s:%d: cannot parse %q", p, n, sc.Text())
		}
	}
	if len(cur) > 0 {
		layers = append(layers, cur)
	}
	return layers, sc.Err()
}
