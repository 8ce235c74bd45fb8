package staticpod

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/nodekeeper/nodekeeper/internal/podplan"
)

const manifest = "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {containers: [{name: c, image: i}]}\n"

func TestParse(t *testing.T) {
	p, err := Parse("/m/a.yaml", []byte(manifest), "Node1")
	if err != nil {
		t.Fatal(err)
	}
	want := &corev1.Pod{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: "a-node1", Namespace: "default", UID: p.UID,
			Annotations: map[string]string{podplan.AnnotationConfigSource: "file", podplan.AnnotationConfigHash: string(p.UID)}},
		Spec: corev1.PodSpec{NodeName: "Node1", RestartPolicy: corev1.RestartPolicyAlways, Containers: []corev1.Container{{Name: "c", Image: "i"}},
			Tolerations: []corev1.Toleration{{Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute}}}}
	if !reflect.DeepEqual(p, want) || len(p.UID) != 32 {
		t.Errorf("got %+v\nwant %+v", p, want)
	}
	for _, tt := range []struct {
		name, path, data, node string
		sameUID                bool
	}{
		{"the same file", "/m/a.yaml", manifest, "Node1", true},
		{"another image", "/m/a.yaml", strings.Replace(manifest, "image: i", "image: j", 1), "Node1", false},
		{"another file", "/m/b.yaml", manifest, "Node1", false},
		{"another node", "/m/a.yaml", manifest, "Node2", false},
	} {
		q, err := Parse(tt.path, []byte(tt.data), tt.node)
		if err != nil || (q.UID == p.UID) != tt.sameUID {
			t.Errorf("%s: UID %q vs %q, err %v", tt.name, q.UID, p.UID, err)
		}
	}
	for _, tt := range []struct{ name, data, err string }{
		{"not YAML", "{{", "decoding /m/bad.yaml"},
		{"not a Pod", "apiVersion: v1\nkind: Service\nmetadata: {name: a}\n", `kind "Service" is not Pod`},
		{"no name", "kind: Pod\nspec: {containers: [{name: c, image: i}]}\n", "metadata.name is required"},
		{"no containers", "kind: Pod\nmetadata: {name: a}\nspec: {}\n", "spec.containers must not be empty"},
		{"a container without image", "kind: Pod\nmetadata: {name: a}\nspec: {containers: [{name: c}]}\n", "every container needs a name and an image"},
		{"an init container without name", "kind: Pod\nmetadata: {name: a}\nspec: {initContainers: [{image: i}], containers: [{name: c, image: i}]}\n", "every container needs a name and an image"},
		{"an unknown field", "kind: Pod\nmetadata: {name: a}\nbogus: 1\nspec: {containers: [{name: c, image: i}]}\n", "decoding /m/bad.yaml"},
		{"a name that is no DNS subdomain", "kind: Pod\nmetadata: {name: A_b}\nspec: {containers: [{name: c, image: i}]}\n", `pod name "A_b-n"`},
	} {
		_, err := Parse("/m/bad.yaml", []byte(tt.data), "n")
		if err == nil || !strings.Contains(err.Error(), tt.err) || !strings.Contains(err.Error(), "/m/bad.yaml") {
			t.Errorf("%s: %v, want an error naming the file with %q", tt.name, err, tt.err)
		}
	}
}

func TestIsManifest(t *testing.T) {
	for name, want := range map[string]bool{"a.yaml": true, "a.yml": true, "a.json": true, ".a.yaml": false, "a.yaml.swp": false, "README": false} {
		if got := IsManifest(name, false); got != want {
			t.Errorf("%s: %v", name, got)
		}
	}
	if IsManifest("d.yaml", true) {
		t.Errorf("a folder is no manifest")
	}
}

func TestRead(t *testing.T) {
	broken := File{Path: "/m/b.yaml", Data: []byte("{{"), Identity: "i2"}
	set, problems := Read([]File{
		{Path: "/m/a.yaml", Data: []byte(manifest), Identity: "i1"},
		broken,
		{Path: "/m/c.yaml", Data: []byte(manifest + "\n"), Identity: "i3"}, // a again
	}, "n")
	key := types.NamespacedName{Namespace: "default", Name: "a-n"}
	if len(set.Pods) != 1 || set.Pods[key] == nil || !reflect.DeepEqual(set.Identities, map[types.NamespacedName]string{key: "i1"}) {
		t.Fatalf("set %+v", set)
	}
	if len(problems) != 2 || problems[0].Path != "/m/b.yaml" || problems[0].Duplicate || problems[0].Key == "" ||
		problems[1].Path != "/m/c.yaml" || !problems[1].Duplicate || !strings.Contains(problems[1].Err.Error(), "defined twice") {
		t.Fatalf("problems %+v", problems)
	}
	_, again := Read([]File{broken}, "n")
	_, edited := Read([]File{{Path: broken.Path, Data: []byte("{{{")}}, "n")
	if again[0].Key != problems[0].Key || edited[0].Key == problems[0].Key {
		t.Errorf("a broken file's key must follow its content: %q %q %q", problems[0].Key, again[0].Key, edited[0].Key)
	}
}

func TestCompare(t *testing.T) {
	pod := func(name, uid string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, UID: types.UID(uid)},
			Status: corev1.PodStatus{Phase: corev1.PodRunning}}
	}
	key := func(name string) types.NamespacedName { return types.NamespacedName{Namespace: "ns", Name: name} }
	keep, edited, rewritten, gone, same := pod("keep", "u1"), pod("edited", "u2"), pod("rewritten", "u3"), pod("gone", "u4"), pod("noident", "u5")
	running := Set{
		Pods:       map[types.NamespacedName]*corev1.Pod{key("keep"): keep, key("edited"): edited, key("rewritten"): rewritten, key("gone"): gone, key("noident"): same},
		Identities: map[types.NamespacedName]string{key("keep"): "f1", key("edited"): "f2", key("rewritten"): "f3", key("gone"): "f4", key("noident"): ""},
	}
	fresh := func(p *corev1.Pod) *corev1.Pod { q := p.DeepCopy(); q.Status = corev1.PodStatus{}; return q }
	newEdited, newRewritten, added := pod("edited", "u2b"), fresh(rewritten), pod("added", "u6")
	next := Set{
		Pods: map[types.NamespacedName]*corev1.Pod{key("keep"): fresh(keep), key("edited"): newEdited, key("rewritten"): newRewritten,
			key("noident"): fresh(same), key("added"): added},
		Identities: map[types.NamespacedName]string{key("keep"): "f1", key("edited"): "f2", key("rewritten"): "f3b", key("noident"): "f5", key("added"): "f6"},
	}
	d := Compare(running, next)
	want := Diff{
		Pods: map[types.NamespacedName]*corev1.Pod{key("keep"): keep, key("edited"): newEdited, key("rewritten"): newRewritten,
			key("noident"): same, key("added"): added},
		Changed: []types.NamespacedName{key("added"), key("edited"), key("gone"), key("rewritten")},
		Stop:    []*corev1.Pod{edited, gone, rewritten},
		Removed: []types.NamespacedName{key("gone")},
	}
	if !reflect.DeepEqual(d, want) {
		t.Fatalf("got %+v\nwant %+v", d, want)
	}
	if d.Pods[key("keep")].Status.Phase != corev1.PodRunning {
		t.Errorf("an unchanged pod keeps its status")
	}
	if d := Compare(Set{}, Set{}); len(d.Pods) != 0 || d.Changed != nil || d.Stop != nil {
		t.Errorf("nothing to nothing: %+v", d)
	}
}

func TestMirror(t *testing.T) {
	static, err := Parse("/m/a.yaml", []byte(manifest), "n")
	if err != nil {
		t.Fatal(err)
	}
	static.Status.Phase = corev1.PodRunning
	static.ResourceVersion = "5"
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n", UID: "node-uid"}}
	m := NewMirror(static, node)
	if m.UID != "" || m.ResourceVersion != "" || m.Status.Phase != "" || m.Annotations[podplan.AnnotationConfigMirror] != string(static.UID) ||
		!reflect.DeepEqual(m.OwnerReferences, []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: "n", UID: "node-uid", Controller: ptr.To(true)}}) {
		t.Errorf("mirror %+v", m)
	}
	if _, ok := static.Annotations[podplan.AnnotationConfigMirror]; ok || static.UID == "" {
		t.Errorf("the static pod must not change")
	}
	deleted := m.DeepCopy()
	deleted.DeletionTimestamp = &metav1.Time{}
	other := m.DeepCopy()
	other.Annotations[podplan.AnnotationConfigMirror] = "older"
	foreign := m.DeepCopy()
	delete(foreign.Annotations, podplan.AnnotationConfigMirror)
	for name, tt := range map[string]struct {
		mirror *corev1.Pod
		stale  bool
	}{"ours": {m, false}, "being deleted": {deleted, true}, "an older manifest": {other, true}, "not a mirror": {foreign, true}} {
		if got := MirrorStale(static, tt.mirror); got != tt.stale {
			t.Errorf("%s: stale %v, want %v", name, got, tt.stale)
		}
	}
}

func TestOlderVersion(t *testing.T) {
	for _, tt := range []struct {
		a, b string
		want bool
	}{{"5", "10", true}, {"10", "5", false}, {"5", "5", false}, {"x", "5", false}, {"5", "", false}} {
		if got := OlderVersion(tt.a, tt.b); got != tt.want {
			t.Errorf("%q < %q: %v", tt.a, tt.b, got)
		}
	}
}

// ReadDir reads the manifests in name order; a file removed and written again has
// another identity.
func TestReadDir(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"b.yaml", "a.json", ".hidden.yaml", "notes.txt"} {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(n), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "sub.yaml"), 0o755); err != nil {
		t.Fatal(err)
	}
	files, problems, err := ReadDir(dir)
	if err != nil || len(problems) != 0 || len(files) != 2 || files[0].Path != filepath.Join(dir, "a.json") || string(files[1].Data) != "b.yaml" {
		t.Fatalf("%v %v %+v", err, problems, files)
	}
	before := files[1].Identity
	if before == "" || FileIdentity(files[1].Path) != before {
		t.Fatalf("identity %q", before)
	}
	if err := os.Remove(files[1].Path); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(files[1].Path, []byte("again"), 0o644); err != nil {
		t.Fatal(err)
	}
	if after := FileIdentity(files[1].Path); strings.Contains(before, "@") && after == before { // with a birth time known
		t.Errorf("a file written anew keeps its identity %q", after)
	}
	if files, _, err := ReadDir(filepath.Join(dir, "missing")); err != nil || files != nil {
		t.Errorf("a missing folder has no manifests: %v %v", files, err)
	}
}
