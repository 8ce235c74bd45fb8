// Package volume sets up a pod's volumes on the host, turns its containers'
// volumeMounts into CRI mounts, and cleans them up, as the kubelet's volume plugins for
// the volume types nodekeeper supports: emptyDir (on disk, or a tmpfs for medium
// Memory), hostPath (with upstream's type checks), and configMap, secret, downwardAPI
// and projected (configMaps, secrets, downwardAPI, serviceAccountToken) volumes written
// as upstream's AtomicWriter.
//
// Every volume of a pod lives under <rootDir>/pods/<uid>/volumes/<name>. ConfigMap,
// Secret, downwardAPI and projected volumes are written atomically the way the kubelet's
// AtomicWriter does (a timestamped folder, a "..data" symlink swapped in one rename, and
// per-key symlinks), so updates reach running containers; Secret and projected volumes
// and emptyDir with medium Memory are tmpfs mounts, never on disk.
//
// The package's seams: the API objects come through Sources (podconfig.Objects for
// ConfigMaps and Secrets, a token function, the node's allocatable), and mounting
// through a Mounter (HostMounter: mount(2); tests use a fake).
package volume

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/nodekeeper/nodekeeper/internal/podconfig"
	"github.com/nodekeeper/nodekeeper/internal/podplan"
)

// DataDirName is the symlink through which an atomically written volume's files are read.
const DataDirName = "..data"

type configError = podconfig.ConfigError

// Mounter mounts and unmounts the tmpfs under volumes.
type Mounter interface {
	// MountTmpfs mounts a tmpfs with options opts on dir, unless dir is a mount point
	// already.
	MountTmpfs(dir, opts string) error
	// Unmount detaches what is mounted on dir (lazily, as umount -l); dir not being a
	// mount point is not an error the caller needs.
	Unmount(dir string) error
}

// HostMounter mounts with mount(2).
type HostMounter struct{}

// Unmount detaches dir (MNT_DETACH).
func (HostMounter) Unmount(dir string) error { return unix.Unmount(dir, unix.MNT_DETACH) }

// Sources is where a pod's volumes' content comes from.
type Sources struct {
	// Objects reads the pod's namespace's ConfigMaps and Secrets.
	Objects podconfig.Objects
	// Token returns a service account token for a projected serviceAccountToken source.
	Token func(*corev1.ServiceAccountTokenProjection) (string, error)
	// Allocatable is the node's allocatable, for downwardAPI limits a container does
	// not set (called at most once per volume, only when needed).
	Allocatable func() corev1.ResourceList
	// HostIP is status.hostIP for downwardAPI fieldRefs.
	HostIP string
}

// Manager sets up, mounts and cleans up the volumes of pods under RootDir.
type Manager struct {
	// RootDir is the agent's root dir: pods live in <RootDir>/pods/<uid>.
	RootDir string
	Mounter Mounter
	// Now stamps atomically written folders (time.Now when nil).
	Now func() time.Time
}

// PodDir is the pod's folder.
func (m *Manager) PodDir(uid types.UID) string { return filepath.Join(m.RootDir, "pods", string(uid)) }

// Dir is the host folder of one volume.
func (m *Manager) Dir(pod *corev1.Pod, name string) string {
	return filepath.Join(m.PodDir(pod.UID), "volumes", name)
}

// SetUp makes every volume of the pod ready on the host (creating or refreshing
// its content). A problem with a user object (missing ConfigMap or Secret, bad hostPath)
// is a configError: the containers wait with CreateContainerConfigError.
func (m *Manager) SetUp(pod *corev1.Pod, src Sources) error {
	for i := range pod.Spec.Volumes {
		if err := m.setUp(pod, &pod.Spec.Volumes[i], src); err != nil {
			return SetupError{Volume: pod.Spec.Volumes[i].Name, Err: err}
		}
	}
	return nil
}

// SetupError is a volume that could not be set up; its text is upstream's
// FailedMount event message (operationexecutor's GenerateError).
type SetupError struct {
	Volume string
	Err    error
}

func (e SetupError) Error() string {
	return fmt.Sprintf("MountVolume.SetUp failed for volume %q : %v", e.Volume, e.Err)
}

func (e SetupError) Unwrap() error { return e.Err }

// setUp makes one volume ready on the host.
func (m *Manager) setUp(pod *corev1.Pod, v *corev1.Volume, src Sources) error {
	dir := m.Dir(pod, v.Name)
	switch {
	case v.EmptyDir != nil:
		// as upstream's setupDir: 0777 whatever the umask, set before a tmpfs is mounted
		// over it (whose root then has tmpfs's own 1777, sticky bit included)
		if err := os.MkdirAll(dir, 0o777); err != nil {
			return err
		}
		if fi, err := os.Lstat(dir); err == nil && fi.Mode().Perm() != 0o777 {
			if err := os.Chmod(dir, 0o777); err != nil {
				return err
			}
		}
		if v.EmptyDir.Medium == corev1.StorageMediumMemory {
			opts := ""
			if v.EmptyDir.SizeLimit != nil && !v.EmptyDir.SizeLimit.IsZero() {
				opts = "size=" + strconv.FormatInt(v.EmptyDir.SizeLimit.Value(), 10)
			}
			if err := m.Mounter.MountTmpfs(dir, opts); err != nil {
				return err
			}
		}
		if fsGroup := podFSGroup(pod); fsGroup != nil {
			if err := setVolumeOwnership(dir, *fsGroup, false, true); err != nil {
				return fmt.Errorf("applying fsGroup: %w", err)
			}
		}
	case v.HostPath != nil:
		if err := CheckHostPath(v.HostPath); err != nil {
			return configError{Msg: err.Error()}
		}
	case v.ConfigMap != nil, v.Secret != nil, v.DownwardAPI != nil, v.Projected != nil:
		files, _, err := m.Files(pod, v, src)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		if v.Secret != nil || v.Projected != nil {
			if err := m.Mounter.MountTmpfs(dir, "mode=0755"); err != nil {
				return err
			}
		}
		fsGroup := podFSGroup(pod)
		if fsGroup != nil {
			for p, f := range files {
				f.Mode |= 0o440 // group-readable, as upstream's SetVolumeOwnership
				files[p] = f
			}
		}
		if err := m.atomicWrite(dir, files, fsGroup); err != nil {
			return err
		}
	default:
		// unsupported volume types (CSI, PVCs, …) are reported, not ignored
		return configError{Msg: "this volume type is not supported by nodekeeper"}
	}
	return nil
}

// MountTmpfs mounts a tmpfs on dir unless a mount point is already there.
func (HostMounter) MountTmpfs(dir, opts string) error {
	var st, parent unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return err
	}
	if err := unix.Stat(filepath.Dir(dir), &parent); err != nil {
		return err
	}
	if st.Dev != parent.Dev {
		return nil // already a mount point
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, opts); err != nil {
		return fmt.Errorf("mounting tmpfs on %s: %w", dir, err)
	}
	return nil
}

// File is one file of a ConfigMap/Secret/downwardAPI/projected volume.
type File struct {
	Data []byte
	Mode os.FileMode
}

func keyPaths(items []corev1.KeyToPath, data map[string][]byte, defMode os.FileMode, what string, optional bool) (map[string]File, error) {
	out := map[string]File{}
	if len(items) == 0 {
		for k, v := range data {
			out[k] = File{v, defMode}
		}
		return out, nil
	}
	for _, it := range items {
		v, ok := data[it.Key]
		if !ok {
			if optional {
				continue
			}
			return nil, configError{Msg: fmt.Sprintf("configmap references non-existent config key: %s in %s", it.Key, what)}
		}
		m := defMode
		if it.Mode != nil {
			m = os.FileMode(*it.Mode)
		}
		out[it.Path] = File{v, m}
	}
	return out, nil
}

func mode(p *int32, def int32) os.FileMode {
	if p != nil {
		return os.FileMode(*p)
	}
	return os.FileMode(def)
}

// Files computes the files of a ConfigMap, Secret, downwardAPI or projected volume.
func (m *Manager) Files(pod *corev1.Pod, v *corev1.Volume, src Sources) (map[string]File, os.FileMode, error) {
	cmFiles := func(name string, items []corev1.KeyToPath, optional *bool, def os.FileMode) (map[string]File, error) {
		cm, err := src.Objects.ConfigMap(name)
		if err != nil {
			if apierrors.IsNotFound(err) && optional != nil && *optional {
				return map[string]File{}, nil
			}
			return nil, podconfig.RefError("configmap", name, err)
		}
		data := map[string][]byte{}
		for k, s := range cm.Data {
			data[k] = []byte(s)
		}
		for k, b := range cm.BinaryData {
			data[k] = b
		}
		return keyPaths(items, data, def, "ConfigMap "+name, optional != nil && *optional)
	}
	secFiles := func(name string, items []corev1.KeyToPath, optional *bool, def os.FileMode) (map[string]File, error) {
		s, err := src.Objects.Secret(name)
		if err != nil {
			if apierrors.IsNotFound(err) && optional != nil && *optional {
				return map[string]File{}, nil
			}
			return nil, podconfig.RefError("secret", name, err)
		}
		return keyPaths(items, s.Data, def, "Secret "+name, optional != nil && *optional)
	}
	var allocatable corev1.ResourceList
	dapiFiles := func(items []corev1.DownwardAPIVolumeFile, def os.FileMode) (map[string]File, error) {
		out := map[string]File{}
		for _, it := range items {
			var val string
			var err error
			switch {
			case it.FieldRef != nil:
				switch it.FieldRef.FieldPath {
				case "metadata.labels":
					val = formatMap(pod.Labels)
				case "metadata.annotations":
					val = formatMap(pod.Annotations)
				default:
					val, err = podconfig.FieldValue(pod, it.FieldRef.FieldPath, src.HostIP)
				}
			case it.ResourceFieldRef != nil:
				if allocatable == nil {
					allocatable = src.Allocatable()
				}
				val, err = podconfig.VolumeResourceValue(it.ResourceFieldRef, pod, allocatable)
			}
			if err != nil {
				return nil, configError{Msg: fmt.Sprintf("downwardAPI %s: %v", it.Path, err)}
			}
			out[it.Path] = File{[]byte(val), mode(it.Mode, int32(def))}
		}
		return out, nil
	}
	switch {
	case v.ConfigMap != nil:
		def := mode(v.ConfigMap.DefaultMode, corev1.ConfigMapVolumeSourceDefaultMode)
		f, err := cmFiles(v.ConfigMap.Name, v.ConfigMap.Items, v.ConfigMap.Optional, def)
		return f, def, err
	case v.Secret != nil:
		def := mode(v.Secret.DefaultMode, corev1.SecretVolumeSourceDefaultMode)
		f, err := secFiles(v.Secret.SecretName, v.Secret.Items, v.Secret.Optional, def)
		return f, def, err
	case v.DownwardAPI != nil:
		def := mode(v.DownwardAPI.DefaultMode, corev1.DownwardAPIVolumeSourceDefaultMode)
		f, err := dapiFiles(v.DownwardAPI.Items, def)
		return f, def, err
	}
	def := mode(v.Projected.DefaultMode, corev1.ProjectedVolumeSourceDefaultMode)
	out := map[string]File{}
	for _, ps := range v.Projected.Sources {
		var f map[string]File
		var err error
		switch {
		case ps.ConfigMap != nil:
			f, err = cmFiles(ps.ConfigMap.Name, ps.ConfigMap.Items, ps.ConfigMap.Optional, def)
		case ps.Secret != nil:
			f, err = secFiles(ps.Secret.Name, ps.Secret.Items, ps.Secret.Optional, def)
		case ps.DownwardAPI != nil:
			f, err = dapiFiles(ps.DownwardAPI.Items, def)
		case ps.ServiceAccountToken != nil:
			var tok string
			tok, err = src.Token(ps.ServiceAccountToken)
			f = map[string]File{ps.ServiceAccountToken.Path: {[]byte(tok), def}}
		}
		if err != nil {
			return nil, 0, err
		}
		for k, v := range f {
			out[k] = v
		}
	}
	return out, def, nil
}

// formatMap is the downward API's labels and annotations file: key="value" lines, sorted.
func formatMap(m map[string]string) string {
	var b strings.Builder
	for i, k := range slices.Sorted(maps.Keys(m)) {
		if i > 0 {
			b.WriteByte('\n')
		}
		fmt.Fprintf(&b, "%s=%q", k, m[k])
	}
	return b.String()
}

// atomicWrite makes dir hold exactly files, as the kubelet's AtomicWriter: the data goes
// into a fresh "..<timestamp>" folder, "..data" is swapped to it with one rename, and
// each top-level entry is a symlink through "..data". Readers never see a mix.
func (m *Manager) atomicWrite(dir string, files map[string]File, fsGroup *int64) error {
	// unchanged content: nothing to do
	cur, err := os.Readlink(filepath.Join(dir, DataDirName))
	if err == nil && sameFiles(filepath.Join(dir, cur), files) {
		return nil
	}
	now := time.Now
	if m.Now != nil {
		now = m.Now
	}
	ts := "..." + now().UTC().Format("2006_01_02_15_04_05.000000000")
	tsDir := filepath.Join(dir, ts)
	if err := os.MkdirAll(tsDir, 0o755); err != nil {
		return err
	}
	swapped := false
	defer func() {
		if !swapped {
			// a failed write (a full disk, …): "..data" still names the previous
			// content, which the containers keep seeing; the partial copy is freed
			_ = os.RemoveAll(tsDir)
		}
	}()
	for p, f := range files {
		if strings.Contains(p, "..") || filepath.IsAbs(p) {
			return configError{Msg: fmt.Sprintf("invalid volume path %q", p)}
		}
		full := filepath.Join(tsDir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(full, f.Data, f.Mode); err != nil {
			return err
		}
		if err := os.Chmod(full, f.Mode); err != nil {
			return err
		}
	}
	if fsGroup != nil {
		if err := setVolumeOwnership(tsDir, *fsGroup, true, false); err != nil {
			return err
		}
		if err := setVolumeOwnership(dir, *fsGroup, true, true); err != nil {
			return err
		}
	}
	tmpLink := filepath.Join(dir, "..data_tmp")
	_ = os.Remove(tmpLink)
	if err := os.Symlink(ts, tmpLink); err != nil {
		return err
	}
	if err := os.Rename(tmpLink, filepath.Join(dir, DataDirName)); err != nil {
		return err
	}
	swapped = true
	// top-level symlinks for what is there now, none for what is gone
	top := map[string]bool{}
	for p := range files {
		top[strings.SplitN(p, "/", 2)[0]] = true
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		n := e.Name()
		if strings.HasPrefix(n, "..") {
			if n != DataDirName && n != ts {
				_ = os.RemoveAll(filepath.Join(dir, n)) // older timestamped folders
			}
			continue
		}
		if !top[n] {
			_ = os.Remove(filepath.Join(dir, n))
		}
	}
	for n := range top {
		link := filepath.Join(dir, n)
		if target, err := os.Readlink(link); err == nil && target == filepath.Join(DataDirName, n) {
			continue
		}
		_ = os.Remove(link)
		if err := os.Symlink(filepath.Join(DataDirName, n), link); err != nil {
			return err
		}
	}
	return nil
}

func sameFiles(dir string, files map[string]File) bool {
	n := 0
	err := filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		f, ok := files[rel]
		if !ok || info.Mode().Perm() != f.Mode.Perm() {
			return errors.New("differs")
		}
		b, err := os.ReadFile(p)
		if err != nil || string(b) != string(f.Data) {
			return errors.New("differs")
		}
		n++
		return nil
	})
	return err == nil && n == len(files)
}

// podFSGroup is the pod's securityContext.fsGroup, or nil.
func podFSGroup(pod *corev1.Pod) *int64 {
	if sc := pod.Spec.SecurityContext; sc != nil {
		return sc.FSGroup
	}
	return nil
}

// setVolumeOwnership gives a volume to the pod's fsGroup as upstream's
// SetVolumeOwnership: every file and folder (symlinks not followed) gets group fsGroup
// and group read (readOnly) or read-write permission; folders also get the group's
// execute bit and setgid, so new files inherit the group. rootOnly changes only dir
// itself, and only when its group is not already fsGroup (the OnRootMismatch shortcut,
// for a folder whose content the pod owns).
func setVolumeOwnership(dir string, fsGroup int64, readOnly, rootOnly bool) error {
	mask := os.FileMode(0o660)
	if readOnly {
		mask = 0o440
	}
	change := func(p string, info os.FileInfo) error {
		if err := os.Lchown(p, -1, int(fsGroup)); err != nil {
			return err
		}
		if info.Mode()&os.ModeSymlink != 0 {
			return nil
		}
		m := info.Mode() | mask
		if info.IsDir() {
			m |= os.ModeSetgid | 0o110
		}
		return os.Chmod(p, m)
	}
	if rootOnly {
		info, err := os.Lstat(dir)
		if err != nil {
			return err
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok && int64(st.Gid) == fsGroup && info.Mode()&os.ModeSetgid != 0 {
			return nil
		}
		return change(dir, info)
	}
	return filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return change(p, info)
	})
}

// CheckHostPath applies the hostPath type checks as upstream's checkTypeInternal, with
// its messages; DirectoryOrCreate and FileOrCreate create what is missing.
func CheckHostPath(h *corev1.HostPathVolumeSource) error {
	if h.Type == nil || *h.Type == corev1.HostPathUnset {
		return nil
	}
	_, statErr := os.Stat(h.Path)
	exists := statErr == nil
	var want corev1.HostPathType
	var expected string
	switch t := *h.Type; t {
	case corev1.HostPathDirectoryOrCreate:
		if !exists {
			return os.MkdirAll(h.Path, 0o755)
		}
		want, expected = corev1.HostPathDirectory, "directory"
	case corev1.HostPathDirectory:
		want, expected = corev1.HostPathDirectory, "directory"
	case corev1.HostPathFileOrCreate:
		if !exists {
			f, err := os.OpenFile(h.Path, os.O_CREATE, 0o644)
			if err != nil {
				return err
			}
			return f.Close()
		}
		want, expected = corev1.HostPathFile, "file"
	case corev1.HostPathFile:
		want, expected = corev1.HostPathFile, "file"
	case corev1.HostPathSocket:
		want, expected = corev1.HostPathSocket, "socket file"
	case corev1.HostPathCharDev:
		want, expected = corev1.HostPathCharDev, "character device"
	case corev1.HostPathBlockDev:
		want, expected = corev1.HostPathBlockDev, "block device"
	default:
		return fmt.Errorf("%s is an invalid volume type", t)
	}
	got, err := hostFileType(h.Path)
	if err != nil {
		return fmt.Errorf("hostPath type check failed, %s is not a %s, unable to determine its type: %w", h.Path, expected, err)
	}
	if got != want {
		return fmt.Errorf("hostPath type check failed: %s is not a %s, it's a %s", h.Path, expected, got)
	}
	return nil
}

// hostFileType is upstream's getFileType: what kind of file is at p.
func hostFileType(p string) (corev1.HostPathType, error) {
	info, err := os.Stat(p)
	if os.IsNotExist(err) {
		return "", fmt.Errorf("path %q does not exist", p)
	}
	if err != nil {
		return "", err
	}
	switch m := info.Mode(); {
	case m.IsDir():
		return corev1.HostPathDirectory, nil
	case m.IsRegular():
		return corev1.HostPathFile, nil
	case m&os.ModeSocket != 0:
		return corev1.HostPathSocket, nil
	case m&os.ModeCharDevice != 0:
		return corev1.HostPathCharDev, nil
	case m&os.ModeDevice != 0:
		return corev1.HostPathBlockDev, nil
	}
	return "", errors.New("only recognise file, directory, socket, block device and character device")
}

// Mounts turns a container's volumeMounts into CRI mounts (subPath and readOnly honoured;
// ConfigMap, Secret, downwardAPI and projected volumes are always read-only; recursive
// read-only as the runtime allows, supportsRRO).
func (m *Manager) Mounts(pod *corev1.Pod, c *corev1.Container, supportsRRO bool) ([]*runtimeapi.Mount, error) {
	vols := map[string]*corev1.Volume{}
	for i := range pod.Spec.Volumes {
		vols[pod.Spec.Volumes[i].Name] = &pod.Spec.Volumes[i]
	}
	var out []*runtimeapi.Mount
	for _, vm := range c.VolumeMounts {
		v, ok := vols[vm.Name]
		if !ok {
			return nil, configError{Msg: fmt.Sprintf("volume %q not found in the pod", vm.Name)}
		}
		host := m.Dir(pod, v.Name)
		ro := vm.ReadOnly
		if v.HostPath != nil {
			host = v.HostPath.Path
		}
		if v.ConfigMap != nil || v.Secret != nil || v.DownwardAPI != nil || v.Projected != nil {
			ro = true
		}
		if vm.SubPath != "" {
			if strings.Contains(vm.SubPath, "..") || filepath.IsAbs(vm.SubPath) {
				return nil, configError{Msg: fmt.Sprintf("subPath %q must be a relative path without '..'", vm.SubPath)}
			}
			if v.ConfigMap != nil || v.Secret != nil || v.DownwardAPI != nil || v.Projected != nil {
				host = filepath.Join(host, DataDirName, vm.SubPath) // no updates through a subPath, as upstream
			} else {
				base := host
				host = filepath.Join(host, vm.SubPath)
				if _, err := os.Stat(host); os.IsNotExist(err) {
					if err := makeSubPath(base, host); err != nil {
						return nil, err
					}
				}
			}
		}
		rro, err := podplan.ResolveRecursiveReadOnly(vm, supportsRRO)
		if err != nil {
			return nil, configError{Msg: fmt.Sprintf("failed to resolve recursive read-only mode: %v", err)}
		}
		prop, err := podplan.MountPropagation(vm.MountPropagation)
		if err != nil {
			return nil, configError{Msg: err.Error()}
		}
		out = append(out, &runtimeapi.Mount{ContainerPath: vm.MountPath, HostPath: host, Readonly: ro, RecursiveReadOnly: rro, Propagation: prop})
	}
	return out, nil
}

// makeSubPath creates a volume's missing subPath folder as upstream's makeMounts (with
// SafeMakeDir): with the mode of the volume's root, setgid and sticky bits included, so
// that an fsGroup volume's subPath is as writable for the group as the volume.
func makeSubPath(volume, path string) error {
	fi, err := os.Stat(volume)
	if err != nil {
		return err
	}
	perm := fi.Mode() & (os.ModePerm | os.ModeSetgid | os.ModeSetuid | os.ModeSticky)
	if err := os.MkdirAll(path, perm.Perm()); err != nil {
		return err
	}
	return os.Chmod(path, perm) // mkdir's mode went through the umask
}

// CleanUp unmounts and removes everything a pod had on disk.
func (m *Manager) CleanUp(uid types.UID) error {
	dir := m.PodDir(uid)
	vols, err := filepath.Glob(filepath.Join(dir, "volumes", "*"))
	if err != nil {
		return err
	}
	for _, v := range vols {
		_ = m.Mounter.Unmount(v) // most volumes are no mount point: EINVAL says nothing
	}
	return os.RemoveAll(dir)
}
