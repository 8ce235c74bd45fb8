package staticpod

import (
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/nodekeeper/nodekeeper/internal/podplan"
)

// FuzzParseStaticPod feeds the manifest parser (Parse) arbitrary files (the committed
// corpus is in testdata/fuzz/FuzzParseStaticPod; `go test -run '^$' -fuzz
// FuzzParseStaticPod ./internal/staticpod` explores further). A broken manifest must be
// an error, never a panic; what it accepts is a pod the node can run: named after the
// node, bound to it, with a UID and config hash, every container named and with an
// image, and the same result for the same file.
func FuzzParseStaticPod(f *testing.F) {
	for _, s := range []string{
		"",
		"apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec:\n  containers: [{name: c, image: busybox}]\n",
		"apiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: kube-system, labels: {a: b}}\nspec:\n  initContainers: [{name: i, image: busybox, command: [true]}]\n  containers: [{name: c, image: busybox, ports: [{containerPort: 80}]}]\n  hostNetwork: true\n",
		`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"j"},"spec":{"containers":[{"name":"c","image":"x","resources":{"limits":{"cpu":"100m"}}}]}}`,
		"apiVersion: v1\nkind: Deployment\nmetadata: {name: web}\n",
		"apiVersion: v1\nkind: Pod\nmetadata: {name: UPPER}\nspec:\n  containers: [{name: c, image: busybox}]\n",
		"apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec:\n  containers: [{name: c}]\n",
		"apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec:\n  containers: [{name: c, image: b, resources: {limits: {memory: lots}}}]\n",
		"apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec:\n  bogus: 1\n  containers: [{name: c, image: b}]\n",
		"metadata: {name: web}\nspec:\n  volumes: [{name: v, hostPath: {path: /tmp}}]\n  containers: [{name: c, image: b, volumeMounts: [{name: v, mountPath: /v}]}]\n",
		"- a\n- b\n",
		"{{{",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		const nodeName = "Node-1"
		pod, err := Parse("/etc/manifests/x.yaml", data, nodeName)
		if err != nil {
			if pod != nil {
				t.Fatalf("an error with a pod: %v", err)
			}
			return
		}
		if !strings.HasSuffix(pod.Name, "-node-1") || pod.Namespace == "" || pod.Spec.NodeName != nodeName || pod.UID == "" {
			t.Fatalf("accepted pod not bound to the node: name %q namespace %q node %q uid %q", pod.Name, pod.Namespace, pod.Spec.NodeName, pod.UID)
		}
		if pod.Annotations[podplan.AnnotationConfigHash] != string(pod.UID) || pod.Annotations[podplan.AnnotationConfigSource] != "file" {
			t.Fatalf("accepted pod without its static annotations: %v", pod.Annotations)
		}
		if len(pod.Spec.Containers) == 0 || pod.Spec.RestartPolicy == "" {
			t.Fatalf("accepted pod without containers or restart policy")
		}
		for _, c := range append(append([]corev1.Container(nil), pod.Spec.InitContainers...), pod.Spec.Containers...) {
			if c.Name == "" || c.Image == "" {
				t.Fatalf("accepted container without a name or image: %+v", c)
			}
		}
		again, err := Parse("/etc/manifests/x.yaml", data, nodeName)
		if err != nil || !reflect.DeepEqual(pod, again) {
			t.Fatalf("not deterministic: %v", err)
		}
		if other, err := Parse("/etc/manifests/y.yaml", data, nodeName); err != nil || other.UID == pod.UID {
			t.Fatalf("the same manifest in another file must be another pod (UID %q): %v", pod.UID, err)
		}
	})
}
