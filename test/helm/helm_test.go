// Package helm tests the Helm chart in charts/nodekeeper: lint, rendering for several
// value sets, a server-side dry run of the rendered manifests against a real
// kube-apiserver (envtest), and the agent's reconcilers running against that apiserver
// as the chart's ServiceAccount, so that a rule missing from the chart's ClusterRole
// shows up as a "forbidden" error.
//
// The helm binary is built from the Go module proxy by hack/helm.sh (cached in
// $NK_CACHE/tools/helm); kube-apiserver and etcd come from hack/k8s-bins.sh
// (KUBEBUILDER_ASSETS, which `make test` exports).
package helm

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"

	testenv "github.com/nodekeeper/nodekeeper/envtest"
)

const (
	// namespace the chart is installed into by these tests
	releaseNamespace = "nodekeeper-system"
	chartRel         = "charts/nodekeeper"
)

var (
	repoRoot string
	helmBin  string
	helmErr  error // why helm could not be built, if it could not
	env      *testenv.Env
	envErr   error
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	var err error
	if repoRoot, err = filepath.Abs(filepath.Join("..", "..")); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	installLogCapture()
	helmBin, helmErr = buildHelm()
	env, envErr = testenv.Start()
	if envErr == nil {
		defer func() { _ = env.Stop() }()
		// the apiserver creates kube-node-lease itself, but may not have yet
		for _, ns := range []string{"kube-node-lease", releaseNamespace} {
			err := env.Client.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
			if err != nil && !apierrors.IsAlreadyExists(err) {
				fmt.Fprintln(os.Stderr, "creating namespace:", err)
				return 1
			}
		}
	}
	return m.Run()
}

// buildHelm runs hack/helm.sh, which builds helm once and afterwards only checks it.
func buildHelm() (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(repoRoot, "hack", "helm.sh"))
	cmd.Dir = repoRoot
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("hack/helm.sh: %w\n%s", err, lastLines(stderr.String(), 30))
	}
	if d := time.Since(start); d > 10*time.Second {
		fmt.Fprintf(os.Stderr, "test/helm: built helm with hack/helm.sh in %s\n", d.Round(time.Second))
	}
	return strings.TrimSpace(stdout.String()), nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// needHelm skips the test, saying why, when helm could not be built here.
func needHelm(t *testing.T) {
	t.Helper()
	if helmErr != nil {
		t.Skipf("SKIP: the helm binary could not be built by hack/helm.sh, so the chart cannot be rendered: %v", helmErr)
	}
}

// needEnv fails the test when the control plane did not start.
func needEnv(t *testing.T) {
	t.Helper()
	if envErr != nil {
		t.Fatalf("envtest control plane: %v", envErr)
	}
}

func helm(t *testing.T, args ...string) (string, error) {
	t.Helper()
	needHelm(t)
	cmd := exec.Command(helmBin, args...)
	cmd.Dir = repoRoot
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return stdout.String(), fmt.Errorf("helm %s: %w\n%s%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String(), nil
}

// valuesFile writes values YAML to a temporary file for -f.
func valuesFile(t *testing.T, values string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(p, []byte(values), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// rendered is the output of `helm template`, decoded strictly.
type rendered struct {
	raw            string
	objects        []runtime.Object
	unstructured   []*unstructured.Unstructured
	ServiceAccount *corev1.ServiceAccount
	ClusterRole    *rbacv1.ClusterRole
	Binding        *rbacv1.ClusterRoleBinding
	ConfigMap      *corev1.ConfigMap
	DaemonSet      *appsv1.DaemonSet
	TestPod        *corev1.Pod                // the helm test hook
	MetricsService *corev1.Service            // with serviceMonitor.enabled
	ServiceMonitor *unstructured.Unstructured // monitoring.coreos.com/v1, not in the scheme
}

// render runs `helm template release chart -n releaseNamespace -f values` and decodes
// every document; unknown or duplicate fields are errors.
func render(t *testing.T, release, values string) *rendered {
	t.Helper()
	out, err := helm(t, "template", release, chartRel, "--namespace", releaseNamespace, "-f", valuesFile(t, values))
	if err != nil {
		t.Fatal(err)
	}
	r, err := decode(out)
	if err != nil {
		t.Fatalf("decoding the rendered chart: %v\n%s", err, out)
	}
	return r
}

var strictDecoder = serializer.NewCodecFactory(scheme.Scheme, serializer.EnableStrict).UniversalDeserializer()

func decode(manifests string) (*rendered, error) {
	r := &rendered{raw: manifests}
	dec := utilyaml.NewYAMLReader(bufio.NewReader(strings.NewReader(manifests)))
	for {
		doc, err := dec.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		u := &unstructured.Unstructured{}
		if err := utilyaml.Unmarshal(doc, &u.Object); err != nil {
			return nil, err
		}
		if u.GetKind() == "ServiceMonitor" && u.GetAPIVersion() == "monitoring.coreos.com/v1" {
			r.ServiceMonitor = u
			continue
		}
		obj, _, err := strictDecoder.Decode(doc, nil, nil)
		if err != nil {
			return nil, fmt.Errorf("%w in\n%s", err, doc)
		}
		r.objects = append(r.objects, obj)
		r.unstructured = append(r.unstructured, u)
		switch o := obj.(type) {
		case *corev1.ServiceAccount:
			r.ServiceAccount = o
		case *rbacv1.ClusterRole:
			r.ClusterRole = o
		case *rbacv1.ClusterRoleBinding:
			r.Binding = o
		case *corev1.ConfigMap:
			r.ConfigMap = o
		case *appsv1.DaemonSet:
			r.DaemonSet = o
		case *corev1.Pod:
			r.TestPod = o
		case *corev1.Service:
			r.MetricsService = o
		default:
			return nil, fmt.Errorf("unexpected object %T in the chart", obj)
		}
	}
	return r, nil
}

func stripComments(doc []byte) []byte {
	var out [][]byte
	for _, l := range bytes.Split(doc, []byte("\n")) {
		if !bytes.HasPrefix(bytes.TrimSpace(l), []byte("#")) {
			out = append(out, l)
		}
	}
	return bytes.Join(out, []byte("\n"))
}
