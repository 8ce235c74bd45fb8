// Package staticpod is the kubelet's file config source (upstream pkg/kubelet/config
// file.go and common.go) and its mirror pods (pkg/kubelet/pod/mirror_client.go): static
// pod manifests are parsed and defaulted (Parse), a read of the folder is turned into
// the node's static pods (Read), compared with what runs (Compare), and a mirror pod is
// made for each (NewMirror, MirrorStale). All of it is pure; the reading of the folder
// (ReadDir) and FileIdentity touch the disk; the PodReconciler runs the pods and writes
// the mirrors.
package staticpod

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/utils/ptr"

	"github.com/nodekeeper/nodekeeper/internal/podplan"
	"github.com/nodekeeper/nodekeeper/internal/strictyaml"
)

// Parse decodes one manifest strictly and turns it into the pod the node runs: name
// suffixed with the node name, namespace defaulted, bound to the node, with a UID and
// config hash derived from the node, the path and the file's content (as upstream).
func Parse(path string, data []byte, nodeName string) (*corev1.Pod, error) {
	pod := &corev1.Pod{}
	if err := strictyaml.Unmarshal(data, pod); err != nil {
		return nil, fmt.Errorf("decoding %s: %w", path, err)
	}
	if pod.Kind != "" && pod.Kind != "Pod" {
		return nil, fmt.Errorf("%s: kind %q is not Pod", path, pod.Kind)
	}
	if pod.Name == "" {
		return nil, fmt.Errorf("%s: metadata.name is required", path)
	}
	if len(pod.Spec.Containers) == 0 {
		return nil, fmt.Errorf("%s: spec.containers must not be empty", path)
	}
	for _, c := range append(append([]corev1.Container(nil), pod.Spec.InitContainers...), pod.Spec.Containers...) {
		if c.Name == "" || c.Image == "" {
			return nil, fmt.Errorf("%s: every container needs a name and an image", path)
		}
	}
	if pod.Namespace == "" {
		pod.Namespace = metav1.NamespaceDefault
	}
	pod.Name = pod.Name + "-" + strings.ToLower(nodeName)
	for _, msg := range validation.IsDNS1123Subdomain(pod.Name) {
		return nil, fmt.Errorf("%s: pod name %q: %s", path, pod.Name, msg)
	}
	sum := sha256.Sum256(append([]byte(nodeName+"\x00"+path+"\x00"), data...))
	hash := hex.EncodeToString(sum[:16])
	pod.UID = types.UID(hash)
	pod.Spec.NodeName = nodeName
	if pod.Spec.RestartPolicy == "" {
		pod.Spec.RestartPolicy = corev1.RestartPolicyAlways
	}
	if pod.Annotations == nil {
		pod.Annotations = map[string]string{}
	}
	pod.Annotations[podplan.AnnotationConfigSource] = "file"
	pod.Annotations[podplan.AnnotationConfigHash] = hash
	pod.Spec.Tolerations = append(pod.Spec.Tolerations, corev1.Toleration{Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute})
	return pod, nil
}

// IsManifest tells whether a folder entry is read as a manifest: a file, not hidden,
// named *.yaml, *.yml or *.json.
func IsManifest(name string, dir bool) bool {
	return !dir && !strings.HasPrefix(name, ".") &&
		(strings.HasSuffix(name, ".yaml") || strings.HasSuffix(name, ".yml") || strings.HasSuffix(name, ".json"))
}

// File is one manifest as read from the folder.
type File struct {
	Path string
	Data []byte
	// Identity tells files with the same path apart (FileIdentity).
	Identity string
}

// Problem is a manifest that is not run.
type Problem struct {
	Path string
	// Key names the file's path and content, so one broken file is reported once.
	Key string
	Err error
	// Duplicate: the pod is defined by an earlier file too.
	Duplicate bool
}

// Set is the static pods a read of the folder gives, by namespace/name, with the
// identity of the file each came from.
type Set struct {
	Pods       map[types.NamespacedName]*corev1.Pod
	Identities map[types.NamespacedName]string
}

// Read turns the folder's manifests (in name order) into the node's static pods: a
// broken file is a Problem and skipped, and so is a later file defining a pod again.
func Read(files []File, nodeName string) (Set, []Problem) {
	set := Set{Pods: map[types.NamespacedName]*corev1.Pod{}, Identities: map[types.NamespacedName]string{}}
	var problems []Problem
	for _, f := range files {
		pod, err := Parse(f.Path, f.Data, nodeName)
		if err != nil {
			problems = append(problems, Problem{Path: f.Path, Key: fmt.Sprintf("%s/%x", f.Path, sha256.Sum256(f.Data)), Err: err})
			continue
		}
		k := types.NamespacedName{Namespace: pod.Namespace, Name: pod.Name}
		if _, dup := set.Pods[k]; dup {
			problems = append(problems, Problem{Path: f.Path, Err: fmt.Errorf("pod %s is defined twice", k), Duplicate: true})
			continue
		}
		set.Pods[k] = pod
		set.Identities[k] = f.Identity
	}
	return set, problems
}

// Diff is what a new read of the folder changes.
type Diff struct {
	// Pods is the new set of static pods; a pod that did not change is the running
	// object (its status computed so far is kept).
	Pods map[types.NamespacedName]*corev1.Pod
	// Changed are the keys of pods added, replaced or removed, sorted.
	Changed []types.NamespacedName
	// Stop are the running pods to stop (replaced, their file written anew, or
	// removed), sorted by key.
	Stop []*corev1.Pod
	// Removed are the keys no file defines any more, sorted.
	Removed []types.NamespacedName
}

// Compare is the diff of the folder (next) against what runs (running): a pod whose
// content changed (another UID) is replaced, and so is one whose file was removed and
// written again (another identity: the kubelet sees both through inotify), its
// containers restarted; a pod no file defines is removed.
func Compare(running, next Set) Diff {
	d := Diff{Pods: make(map[types.NamespacedName]*corev1.Pod, len(next.Pods))}
	for k, p := range next.Pods {
		old, ok := running.Pods[k]
		switch {
		case !ok:
			d.Changed = append(d.Changed, k)
			d.Pods[k] = p
		case old.UID != p.UID, running.Identities[k] != "" && next.Identities[k] != running.Identities[k]:
			d.Changed = append(d.Changed, k)
			d.Stop = append(d.Stop, old)
			d.Pods[k] = p
		default:
			d.Pods[k] = old
		}
	}
	for k, old := range running.Pods {
		if _, ok := next.Pods[k]; !ok {
			d.Changed = append(d.Changed, k)
			d.Stop = append(d.Stop, old)
			d.Removed = append(d.Removed, k)
		}
	}
	less := func(a, b types.NamespacedName) bool { return a.String() < b.String() }
	sort.Slice(d.Changed, func(i, j int) bool { return less(d.Changed[i], d.Changed[j]) })
	sort.Slice(d.Removed, func(i, j int) bool { return less(d.Removed[i], d.Removed[j]) })
	sort.Slice(d.Stop, func(i, j int) bool {
		return less(types.NamespacedName{Namespace: d.Stop[i].Namespace, Name: d.Stop[i].Name},
			types.NamespacedName{Namespace: d.Stop[j].Namespace, Name: d.Stop[j].Name})
	})
	return d
}

// MirrorStale tells whether the mirror seen in the API must be deleted and made anew:
// it is of an older version of the manifest (or not a mirror of this pod at all), or
// someone deleted it.
func MirrorStale(static, mirror *corev1.Pod) bool {
	return mirror.Annotations[podplan.AnnotationConfigMirror] != static.Annotations[podplan.AnnotationConfigHash] || mirror.DeletionTimestamp != nil
}

// NewMirror is the mirror pod of a static pod, as upstream's CreateMirrorPod: the pod
// without UID, version or status, annotated with its config hash and owned by its Node
// (the NodeRestriction admission plugin checks the owner).
func NewMirror(static *corev1.Pod, node *corev1.Node) *corev1.Pod {
	m := static.DeepCopy()
	m.UID, m.ResourceVersion, m.Status = "", "", corev1.PodStatus{}
	if m.Annotations == nil {
		m.Annotations = map[string]string{}
	}
	m.Annotations[podplan.AnnotationConfigMirror] = static.Annotations[podplan.AnnotationConfigHash]
	m.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: node.Name, UID: node.UID, Controller: ptr.To(true)}}
	return m
}

// OlderVersion tells whether resourceVersion a is before b (both etcd revisions; when
// either is not a number, neither is taken as older).
func OlderVersion(a, b string) bool {
	x, errA := strconv.ParseUint(a, 10, 64)
	y, errB := strconv.ParseUint(b, 10, 64)
	return errA == nil && errB == nil && x < y
}

// ReadDir reads the manifests of the folder dir, in name order (a folder that does not
// exist has none). A file that cannot be read is returned as a Problem.
func ReadDir(dir string) ([]File, []Problem, error) {
	entries, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		return nil, nil, err
	}
	var files []File
	var problems []Problem
	for _, e := range entries { // ReadDir sorts by name
		if !IsManifest(e.Name(), e.IsDir()) {
			continue
		}
		path := filepath.Join(dir, e.Name())
		data, err := os.ReadFile(path)
		if err != nil {
			problems = append(problems, Problem{Path: path, Err: err})
			continue
		}
		files = append(files, File{Path: path, Data: data, Identity: FileIdentity(path)})
	}
	return files, problems, nil
}

// FileIdentity tells files apart that have the same path: a file removed and created
// again has a new birth time (and often a new inode); "" when it cannot be read.
func FileIdentity(path string) string {
	var st unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, path, 0, unix.STATX_INO|unix.STATX_BTIME, &st); err != nil {
		return ""
	}
	id := fmt.Sprintf("%d:%d:%d", st.Dev_major, st.Dev_minor, st.Ino)
	if st.Mask&unix.STATX_BTIME != 0 {
		id += fmt.Sprintf("@%d.%09d", st.Btime.Sec, st.Btime.Nsec)
	}
	return id
}
