package volume

import (
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/utils/ptr"

	"github.com/nodekeeper/nodekeeper/internal/podconfig"
)

// fakeMounter keeps the mount table: dir -> options.
type fakeMounter struct {
	mounts    map[string]string
	unmounted []string
	fail      error
}

func (f *fakeMounter) MountTmpfs(dir, opts string) error {
	if f.fail != nil {
		return f.fail
	}
	if _, err := os.Stat(dir); err != nil {
		return err // as mount(2): the mount point must exist
	}
	if f.mounts == nil {
		f.mounts = map[string]string{}
	}
	if _, ok := f.mounts[dir]; !ok {
		f.mounts[dir] = opts
	}
	return nil
}

func (f *fakeMounter) Unmount(dir string) error {
	if _, ok := f.mounts[dir]; !ok {
		return syscall.EINVAL
	}
	delete(f.mounts, dir)
	f.unmounted = append(f.unmounted, dir)
	return nil
}

// objects is a namespace's ConfigMaps and Secrets.
type objects struct {
	cms  map[string]*corev1.ConfigMap
	secs map[string]*corev1.Secret
	err  error
}

func (o *objects) ConfigMap(name string) (*corev1.ConfigMap, error) {
	if o.err != nil {
		return nil, o.err
	}
	if cm, ok := o.cms[name]; ok {
		return cm, nil
	}
	return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "configmaps"}, name)
}

func (o *objects) Secret(name string) (*corev1.Secret, error) {
	if s, ok := o.secs[name]; ok {
		return s, nil
	}
	return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "secrets"}, name)
}

func setup(t *testing.T) (*Manager, *fakeMounter, *objects, Sources, *corev1.Pod) {
	t.Helper()
	mnt := &fakeMounter{}
	tick := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	m := &Manager{RootDir: t.TempDir(), Mounter: mnt, Now: func() time.Time { tick = tick.Add(time.Second); return tick }}
	obj := &objects{cms: map[string]*corev1.ConfigMap{"cfg": {Data: map[string]string{"app.conf": "v1", "other": "x"}, BinaryData: map[string][]byte{"bin": {0, 1}}}},
		secs: map[string]*corev1.Secret{"sec": {Data: map[string][]byte{"password": []byte("s3cret")}}}}
	src := Sources{Objects: obj, HostIP: "192.0.2.1",
		Token:       func(p *corev1.ServiceAccountTokenProjection) (string, error) { return "token-for-" + p.Audience, nil },
		Allocatable: func() corev1.ResourceList { return corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("4")} }}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", UID: "uid-1", Labels: map[string]string{"tier": "web", "app": "x"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c"}}}}
	return m, mnt, obj, src, pod
}

// tree lists a folder: "path mode [-> target]" per entry, timestamped folders as "..TS".
func tree(t *testing.T, dir string) string {
	t.Helper()
	var out []string
	err := filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if strings.HasPrefix(rel, "...") {
			rel = "..TS" + rel[strings.IndexByte(rel+"/", '/'):]
		}
		line := rel + " " + info.Mode().String()
		if info.Mode()&os.ModeSymlink != 0 {
			target, _ := os.Readlink(p)
			if strings.HasPrefix(target, "...") {
				target = "..TS"
			}
			line = rel + " -> " + target
		} else if info.Mode().IsRegular() {
			b, _ := os.ReadFile(p)
			line += " " + string(b)
		}
		out = append(out, line)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return strings.Join(out, "\n")
}

func TestSetUpVolumes(t *testing.T) {
	m, mnt, _, src, pod := setup(t)
	pod.Spec.Volumes = []corev1.Volume{
		{Name: "cfg", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}, Items: []corev1.KeyToPath{{Key: "app.conf", Path: "conf/app.conf", Mode: ptr.To(int32(0o640))}}}}},
		{Name: "sec", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "sec", DefaultMode: ptr.To(int32(0o400))}}},
		{Name: "info", VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{Items: []corev1.DownwardAPIVolumeFile{
			{Path: "labels", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels"}},
			{Path: "name", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}},
			{Path: "cpu", ResourceFieldRef: &corev1.ResourceFieldSelector{ContainerName: "c", Resource: "limits.cpu"}}}}}},
		{Name: "proj", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
			{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Audience: "api", Path: "token"}},
			{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}, Items: []corev1.KeyToPath{{Key: "bin", Path: "bin"}}}},
			{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "absent"}, Optional: ptr.To(true)}},
		}}}},
		{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		{Name: "mem", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory, SizeLimit: ptr.To(resource.MustParse("1Mi"))}}},
	}
	if err := m.SetUp(pod, src); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{
		"cfg":  "..TS drwxr-xr-x\n..TS/conf drwxr-xr-x\n..TS/conf/app.conf -rw-r----- v1\n..data -> ..TS\nconf -> ..data/conf",
		"sec":  "..TS drwxr-xr-x\n..TS/password -r-------- s3cret\n..data -> ..TS\npassword -> ..data/password",
		"info": "..TS drwxr-xr-x\n..TS/cpu -rw-r--r-- 4\n..TS/labels -rw-r--r-- app=\"x\"\ntier=\"web\"\n..TS/name -rw-r--r-- p\n..data -> ..TS\ncpu -> ..data/cpu\nlabels -> ..data/labels\nname -> ..data/name",
		"proj": "..TS drwxr-xr-x\n..TS/bin -rw-r--r-- \x00\x01\n..TS/token -rw-r--r-- token-for-api\n..data -> ..TS\nbin -> ..data/bin\ntoken -> ..data/token",
	} {
		if got := tree(t, m.Dir(pod, name)); got != want {
			t.Errorf("volume %s:\n%s\nwant:\n%s", name, got, want)
		}
	}
	fi, err := os.Stat(m.Dir(pod, "scratch"))
	if err != nil || fi.Mode().Perm() != 0o777 || !fi.IsDir() {
		t.Errorf("emptyDir: %v %v, want a 0777 folder", fi.Mode(), err)
	}
	wantMounts := map[string]string{m.Dir(pod, "sec"): "mode=0755", m.Dir(pod, "proj"): "mode=0755", m.Dir(pod, "mem"): "size=1048576"}
	if len(mnt.mounts) != len(wantMounts) {
		t.Errorf("tmpfs mounts %v, want %v", mnt.mounts, wantMounts)
	}
	for d, o := range wantMounts {
		if mnt.mounts[d] != o {
			t.Errorf("tmpfs on %s: %q, want %q", d, mnt.mounts[d], o)
		}
	}
	if err := m.CleanUp(pod.UID); err != nil {
		t.Fatal(err)
	}
	if len(mnt.mounts) != 0 || len(mnt.unmounted) != 3 {
		t.Errorf("after clean-up: mounted %v, unmounted %v", mnt.mounts, mnt.unmounted)
	}
	if _, err := os.Stat(m.PodDir(pod.UID)); !os.IsNotExist(err) {
		t.Errorf("pod folder left: %v", err)
	}
}

// An update swaps "..data" to a new folder in one rename: new keys appear, removed
// keys' links go, the old folder is freed; the same content writes nothing.
func TestAtomicUpdate(t *testing.T) {
	m, _, obj, src, pod := setup(t)
	pod.Spec.Volumes = []corev1.Volume{{Name: "cfg", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
		LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}}}}}
	if err := m.SetUp(pod, src); err != nil {
		t.Fatal(err)
	}
	dir := m.Dir(pod, "cfg")
	first, _ := os.Readlink(filepath.Join(dir, DataDirName))
	if err := m.SetUp(pod, src); err != nil {
		t.Fatal(err)
	}
	if again, _ := os.Readlink(filepath.Join(dir, DataDirName)); again != first {
		t.Errorf("unchanged content rewritten: %s -> %s", first, again)
	}
	obj.cms["cfg"] = &corev1.ConfigMap{Data: map[string]string{"app.conf": "v2", "new": "n"}}
	if err := m.SetUp(pod, src); err != nil {
		t.Fatal(err)
	}
	if got, want := tree(t, dir), "..TS drwxr-xr-x\n..TS/app.conf -rw-r--r-- v2\n..TS/new -rw-r--r-- n\n..data -> ..TS\napp.conf -> ..data/app.conf\nnew -> ..data/new"; got != want {
		t.Errorf("after the update:\n%s\nwant:\n%s", got, want)
	}
	if _, err := os.Stat(filepath.Join(dir, first)); !os.IsNotExist(err) {
		t.Errorf("the old folder %s is left: %v", first, err)
	}
}

// A problem with a user object is a config error naming it (CreateContainerConfigError),
// wrapped in upstream's MountVolume.SetUp message; other errors are not config errors.
func TestSetUpErrors(t *testing.T) {
	cm := func(name string, items []corev1.KeyToPath, optional *bool) corev1.Volume {
		return corev1.Volume{Name: "v", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: name}, Items: items, Optional: optional}}}
	}
	for _, tc := range []struct {
		name   string
		vol    corev1.Volume
		apiErr error
		want   string // "" for no error
		config bool
	}{
		{name: "missing configmap", vol: cm("nope", nil, nil), config: true,
			want: `MountVolume.SetUp failed for volume "v" : configmap "nope" not found`},
		{name: "missing optional configmap", vol: cm("nope", nil, ptr.To(true))},
		{name: "missing key", vol: cm("cfg", []corev1.KeyToPath{{Key: "k", Path: "k"}}, nil), config: true,
			want: `MountVolume.SetUp failed for volume "v" : configmap references non-existent config key: k in ConfigMap cfg`},
		{name: "missing optional key", vol: cm("cfg", []corev1.KeyToPath{{Key: "k", Path: "k"}}, ptr.To(true))},
		{name: "path escaping the volume", vol: cm("cfg", []corev1.KeyToPath{{Key: "other", Path: "../x"}}, nil), config: true,
			want: `MountVolume.SetUp failed for volume "v" : invalid volume path "../x"`},
		{name: "API unavailable", vol: cm("cfg", nil, nil), apiErr: errors.New("connection refused"),
			want: `MountVolume.SetUp failed for volume "v" : connection refused`},
		{name: "unsupported type", vol: corev1.Volume{Name: "v", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "c"}}},
			config: true, want: `MountVolume.SetUp failed for volume "v" : this volume type is not supported by nodekeeper`},
		{name: "hostPath type check", vol: corev1.Volume{Name: "v", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/dev/null", Type: ptr.To(corev1.HostPathDirectory)}}},
			config: true, want: `MountVolume.SetUp failed for volume "v" : hostPath type check failed: /dev/null is not a directory, it's a CharDevice`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, _, obj, src, pod := setup(t)
			obj.err = tc.apiErr
			pod.Spec.Volumes = []corev1.Volume{tc.vol}
			err := m.SetUp(pod, src)
			got := ""
			if err != nil {
				got = err.Error()
			}
			if got != tc.want {
				t.Fatalf("error %q, want %q", got, tc.want)
			}
			var ce podconfig.ConfigError
			if err != nil && errors.As(err, &ce) != tc.config {
				t.Errorf("config error: %v, want %v", !tc.config, tc.config)
			}
		})
	}
}

// A failing tmpfs mount fails the set-up and writes nothing into the folder.
func TestSetUpMountFailure(t *testing.T) {
	m, mnt, _, src, pod := setup(t)
	mnt.fail = syscall.EPERM
	pod.Spec.Volumes = []corev1.Volume{{Name: "sec", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "sec"}}}}
	if err := m.SetUp(pod, src); !errors.Is(err, syscall.EPERM) {
		t.Fatalf("error %v, want EPERM", err)
	}
	if entries, _ := os.ReadDir(m.Dir(pod, "sec")); len(entries) != 0 {
		t.Errorf("secret written to disk without its tmpfs: %v", entries)
	}
}

func TestMounts(t *testing.T) {
	m, _, _, _, pod := setup(t)
	if err := os.MkdirAll(m.Dir(pod, "scratch"), 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(m.Dir(pod, "scratch"), 0o777); err != nil { // past the umask
		t.Fatal(err)
	}
	pod.Spec.Volumes = []corev1.Volume{
		{Name: "cfg", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{}}},
		{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		{Name: "host", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/var/log"}}},
	}
	c := &corev1.Container{VolumeMounts: []corev1.VolumeMount{
		{Name: "cfg", MountPath: "/etc/app"},
		{Name: "cfg", MountPath: "/etc/one", SubPath: "app.conf"},
		{Name: "scratch", MountPath: "/scratch"},
		{Name: "scratch", MountPath: "/sub", SubPath: "a/b", ReadOnly: true},
		{Name: "host", MountPath: "/logs", ReadOnly: true},
	}}
	got, err := m.Mounts(pod, c, false)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, mt := range got {
		lines = append(lines, strings.TrimPrefix(mt.HostPath, m.PodDir(pod.UID))+" "+mt.ContainerPath+map[bool]string{true: " ro", false: " rw"}[mt.Readonly])
	}
	want := "/volumes/cfg /etc/app ro\n/volumes/cfg/..data/app.conf /etc/one ro\n/volumes/scratch /scratch rw\n/volumes/scratch/a/b /sub ro\n/var/log /logs ro"
	if strings.Join(lines, "\n") != want {
		t.Errorf("mounts:\n%s\nwant:\n%s", strings.Join(lines, "\n"), want)
	}
	if fi, err := os.Stat(filepath.Join(m.Dir(pod, "scratch"), "a", "b")); err != nil || fi.Mode().Perm() != 0o777 {
		t.Errorf("subPath not made with the volume's mode: %v", err)
	}
	for _, bad := range []corev1.VolumeMount{{Name: "missing", MountPath: "/x"}, {Name: "scratch", MountPath: "/x", SubPath: "../up"}, {Name: "scratch", MountPath: "/x", SubPath: "/abs"}} {
		var ce podconfig.ConfigError
		if _, err := m.Mounts(pod, &corev1.Container{VolumeMounts: []corev1.VolumeMount{bad}}, false); !errors.As(err, &ce) {
			t.Errorf("%+v: error %v, want a config error", bad, err)
		}
	}
}

// fsGroup: an emptyDir's root and every file of an atomically written volume get the
// group, group-readable (upstream's SetVolumeOwnership). Needs root (chown).
func TestFSGroupRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("chown needs root")
	}
	m, _, _, src, pod := setup(t)
	pod.Spec.SecurityContext = &corev1.PodSecurityContext{FSGroup: ptr.To(int64(1234))}
	pod.Spec.Volumes = []corev1.Volume{
		{Name: "cfg", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}, DefaultMode: ptr.To(int32(0o600))}}},
		{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
	}
	if err := m.SetUp(pod, src); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{m.Dir(pod, "scratch"), filepath.Join(m.Dir(pod, "cfg"), DataDirName, "other")} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if gid := fi.Sys().(*syscall.Stat_t).Gid; gid != 1234 {
			t.Errorf("%s: group %d, want 1234", p, gid)
		}
		if fi.Mode()&0o040 == 0 {
			t.Errorf("%s: %v not group-readable", p, fi.Mode())
		}
	}
	if fi, _ := os.Stat(m.Dir(pod, "scratch")); fi.Mode()&os.ModeSetgid == 0 {
		t.Errorf("emptyDir %v without setgid", fi.Mode())
	}
}

// The host mounter really mounts a tmpfs (once) and detaches it. Needs root.
func TestHostMounterRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mount needs root")
	}
	dir := filepath.Join(t.TempDir(), "v")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	var hm HostMounter
	for range 2 { // the second finds the mount point and leaves it
		if err := hm.MountTmpfs(dir, "size=65536"); err != nil {
			t.Fatal(err)
		}
	}
	var fs syscall.Statfs_t
	if err := syscall.Statfs(dir, &fs); err != nil {
		t.Fatal(err)
	}
	const tmpfsMagic = 0x01021994
	if fs.Type != tmpfsMagic {
		t.Errorf("not a tmpfs: type %#x", fs.Type)
	}
	if err := hm.Unmount(dir); err != nil {
		t.Fatal(err)
	}
	if err := hm.Unmount(dir); err == nil {
		t.Error("a second unmount: no error (the first did nothing?)")
	}
}
