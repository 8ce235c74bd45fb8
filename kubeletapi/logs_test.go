package kubeletapi

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/scheme"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/nodekeeper/nodekeeper/internal/podplan"
	criFake "github.com/nodekeeper/nodekeeper/runtime/cri/fake"
)

// previous=true reads the last terminated instance; follow=true streams what the
// running instance writes and ends when it exits. (Authentication and authorization of
// /containerLogs are covered by TestKubeletAPI.)
func TestContainerLogsPreviousAndFollow(t *testing.T) {
	ctx := context.Background()
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "talker", UID: "u1"},
		Spec: corev1.PodSpec{NodeName: "n1", Containers: []corev1.Container{{Name: "app"}}}}
	pods := fake.NewClientBuilder().WithScheme(scheme.Scheme).WithObjects(pod).Build()
	rt := criFake.New()
	rt.LoadImage("busybox:local", 1)
	logDir := t.TempDir()
	sbCfg := &runtimeapi.PodSandboxConfig{Metadata: &runtimeapi.PodSandboxMetadata{Name: "talker", Namespace: "ns", Uid: "u1"}, LogDirectory: logDir}
	sb, err := rt.RunPodSandbox(ctx, sbCfg, "")
	must(t, err)
	labels := map[string]string{podplan.LabelPodUID: "u1", podplan.LabelContainerName: "app"}
	start := func(attempt uint32, lines string) string {
		id, err := rt.CreateContainer(ctx, sb, &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: "app", Attempt: attempt},
			Image: &runtimeapi.ImageSpec{Image: "busybox:local"}, Labels: labels, LogPath: filepath.Join("app", string(rune('0'+attempt))+".log")}, sbCfg)
		must(t, err)
		must(t, os.MkdirAll(filepath.Join(logDir, "app"), 0o755))
		must(t, os.WriteFile(filepath.Join(logDir, "app", string(rune('0'+attempt))+".log"), []byte(lines), 0o644))
		must(t, rt.StartContainer(ctx, id))
		return id
	}
	first := start(0, "2026-12-01T10:00:00.000000001Z stdout F from the first run\n")
	must(t, rt.Exit(first, 1))
	current := start(1, "2026-12-01T10:01:00.000000001Z stdout F started again\n")

	s := &Server{NodeName: "n1", Pods: pods, Runtime: rt}
	srv := httptest.NewServer(http.HandlerFunc(s.containerLogs))
	defer srv.Close()
	get := func(q string) (*http.Response, error) { return http.Get(srv.URL + "/containerLogs/ns/talker/app" + q) }

	resp, err := get("?previous=true")
	must(t, err)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "from the first run\n" {
		t.Errorf("previous: %q", b)
	}

	resp, err = get("?follow=true")
	must(t, err)
	defer resp.Body.Close()
	lines := make(chan string, 10)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	next := func() string {
		select {
		case l, ok := <-lines:
			if !ok {
				return "<end>"
			}
			return l
		case <-time.After(10 * time.Second):
			return "<timeout>"
		}
	}
	if l := next(); l != "started again" {
		t.Fatalf("first followed line: %q", l)
	}
	f, err := os.OpenFile(filepath.Join(logDir, "app", "1.log"), os.O_APPEND|os.O_WRONLY, 0)
	must(t, err)
	_, err = f.WriteString("2026-12-01T10:01:01.000000001Z stdout F written later\n")
	must(t, err)
	must(t, f.Close())
	if l := next(); l != "written later" {
		t.Fatalf("a line written while following: %q", l)
	}
	// the log is rotated (renamed, and the runtime reopens a new file at its path)
	must(t, os.Rename(filepath.Join(logDir, "app", "1.log"), filepath.Join(logDir, "app", "1.log.20261201-100102")))
	must(t, os.WriteFile(filepath.Join(logDir, "app", "1.log"), []byte("2026-12-01T10:01:02.000000001Z stdout F after rotation\n"), 0o644))
	if l := next(); l != "after rotation" {
		t.Fatalf("following across a rotation: %q", l)
	}
	must(t, rt.Exit(current, 0))
	if l := next(); l != "<end>" {
		t.Fatalf("the stream should end when the container exits, got %q", l)
	}
}

// Output that does not end in a newline is logged by the runtime as a last partial
// ("P") line: it is served as it is, after the full lines (upstream's ReadLogs).
func TestWriteLogsTrailingPartial(t *testing.T) {
	path := filepath.Join(t.TempDir(), "0.log")
	must(t, os.WriteFile(path, []byte("2026-12-01T10:00:00.000000001Z stdout F first\n"+
		"2026-12-01T10:00:01.000000001Z stdout P name-of-podsecret-value-1\n"), 0o644))
	for _, tt := range []struct {
		o    logOptions
		want string
	}{
		{logOptions{tail: -1, limit: -1}, "first\nname-of-podsecret-value-1"},
		{logOptions{tail: 1, limit: -1}, "name-of-podsecret-value-1"},
		{logOptions{tail: -1, limit: -1, timestamps: true}, "2026-12-01T10:00:00.000000001Z first\n2026-12-01T10:00:01.000000001Z name-of-podsecret-value-1"},
	} {
		var b strings.Builder
		must(t, writeLogs(context.Background(), &b, path, tt.o, false, nil))
		if b.String() != tt.want {
			t.Errorf("%+v: got %q, want %q", tt.o, b.String(), tt.want)
		}
	}
}

// A mirror pod's logs are its static pod's: the containers run under the UID its
// kubernetes.io/config.mirror annotation names, not the mirror's own.
func TestContainerLogsOfMirrorPod(t *testing.T) {
	ctx := context.Background()
	mirror := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "static-n1", UID: "mirror-uid",
		Annotations: map[string]string{"kubernetes.io/config.mirror": "static-hash", "kubernetes.io/config.source": "file"}},
		Spec: corev1.PodSpec{NodeName: "n1", Containers: []corev1.Container{{Name: "app"}}}}
	pods := fake.NewClientBuilder().WithScheme(scheme.Scheme).WithObjects(mirror).Build()
	rt := criFake.New()
	rt.LoadImage("busybox:local", 1)
	logDir := t.TempDir()
	sbCfg := &runtimeapi.PodSandboxConfig{Metadata: &runtimeapi.PodSandboxMetadata{Name: "static-n1", Namespace: "ns", Uid: "static-hash"}, LogDirectory: logDir}
	sb, err := rt.RunPodSandbox(ctx, sbCfg, "")
	must(t, err)
	id, err := rt.CreateContainer(ctx, sb, &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: "app"},
		Image: &runtimeapi.ImageSpec{Image: "busybox:local"}, LogPath: "app/0.log",
		Labels: map[string]string{podplan.LabelPodUID: "static-hash", podplan.LabelContainerName: "app"}}, sbCfg)
	must(t, err)
	must(t, rt.StartContainer(ctx, id))
	must(t, os.WriteFile(filepath.Join(logDir, "app", "0.log"), []byte("2026-12-01T10:00:00.000000001Z stdout F CONFIG_1=value1\n"), 0o644))
	s := &Server{NodeName: "n1", Pods: pods, Runtime: rt}
	srv := httptest.NewServer(http.HandlerFunc(s.containerLogs))
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/containerLogs/ns/static-n1/app")
	must(t, err)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(b) != "CONFIG_1=value1\n" {
		t.Errorf("mirror pod logs: %d %q", resp.StatusCode, b)
	}
}
