package e2e

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/remotecommand"
	utilexec "k8s.io/client-go/util/exec"
)

// Exec sessions through the API server to nodekeeper's kubelet API with client-go's own
// remotecommand clients, over both protocols kubectl speaks (WebSocket, translated by
// the API server, and SPDY straight through), with stdin, a TTY and exit codes.
var _ = Describe("Exec streams through the API server", Ordered, func() {
	var (
		cfg *rest.Config
		cs  *kubernetes.Clientset
	)
	BeforeAll(func() {
		var err error
		cfg, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
		Expect(err).NotTo(HaveOccurred())
		cs, err = kubernetes.NewForConfig(cfg)
		Expect(err).NotTo(HaveOccurred())
		applyManifest(`apiVersion: v1
kind: Pod
metadata: {name: streams, namespace: default}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: docker.io/library/busybox:local
    imagePullPolicy: Never
    command: [sleep, "3600"]
`)
		Eventually(func() (string, error) {
			return kubectl("get", "pod", "streams", "-o", "jsonpath={.status.phase}")
		}, 2*time.Minute, time.Second).Should(Equal("Running"))
	})

	executors := map[string]func(*rest.Config, *rest.Request) (remotecommand.Executor, error){
		"websocket": func(c *rest.Config, req *rest.Request) (remotecommand.Executor, error) {
			return remotecommand.NewWebSocketExecutor(c, "GET", req.URL().String())
		},
		"spdy": func(c *rest.Config, req *rest.Request) (remotecommand.Executor, error) {
			return remotecommand.NewSPDYExecutor(c, "POST", req.URL())
		},
	}
	run := func(proto string, cmd []string, stdin string, tty bool) (string, string, error) {
		req := cs.CoreV1().RESTClient().Post().Resource("pods").Namespace("default").Name("streams").SubResource("exec").
			VersionedParams(&corev1.PodExecOptions{Container: "main", Command: cmd, Stdin: stdin != "", Stdout: true, Stderr: !tty, TTY: tty}, scheme.ParameterCodec)
		ex, err := executors[proto](cfg, req)
		Expect(err).NotTo(HaveOccurred())
		var out, errb bytes.Buffer
		opts := remotecommand.StreamOptions{Stdout: &out, Tty: tty}
		if !tty {
			opts.Stderr = &errb
		}
		if stdin != "" {
			opts.Stdin = strings.NewReader(stdin)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		err = ex.StreamWithContext(ctx, opts)
		return out.String(), errb.String(), err
	}

	for _, proto := range []string{"websocket", "spdy"} {
		It("pipes stdin to the command and its stdout and stderr back ("+proto+")", func() {
			out, errOut, err := run(proto, []string{"sh", "-c", "cat; echo oops >&2"}, "hello through the node\n", false)
			Expect(err).NotTo(HaveOccurred())
			Expect(out).To(Equal("hello through the node\n"))
			Expect(errOut).To(Equal("oops\n"))
		})

		It("gives the command a terminal when asked ("+proto+")", func() {
			out, _, err := run(proto, []string{"sh", "-c", "tty; stty size"}, "", true)
			Expect(err).NotTo(HaveOccurred())
			Expect(out).To(HavePrefix("/dev/pts/"))
		})

		It("reports the command's exit code ("+proto+")", func() {
			_, _, err := run(proto, []string{"sh", "-c", "exit 3"}, "", false)
			var exitErr utilexec.CodeExitError
			Expect(errors.As(err, &exitErr)).To(BeTrue(), "got %v", err)
			Expect(exitErr.Code).To(Equal(3))
		})
	}
})
