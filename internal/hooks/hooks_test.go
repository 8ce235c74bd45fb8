package hooks

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/nodekeeper/nodekeeper/runtime/cri"
)

type fakeExec struct {
	res   *cri.ExecResult
	err   error
	block chan struct{} // if set, ExecSync waits for it or ctx
	calls atomic.Int32
	got   []string
}

func (f *fakeExec) ExecSync(ctx context.Context, id string, cmd []string, _ time.Duration) (*cri.ExecResult, error) {
	f.calls.Add(1)
	f.got = append([]string{id}, cmd...)
	if f.block != nil {
		select {
		case <-f.block:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return f.res, f.err
}

var pod = &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web", UID: "u1"}}

func execHook(cmd ...string) *corev1.LifecycleHandler {
	return &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: cmd}}
}

func TestRunExec(t *testing.T) {
	for _, c := range []struct {
		name    string
		exec    *fakeExec
		wantErr string
	}{
		{"exit 0", &fakeExec{res: &cri.ExecResult{}}, ""},
		{"exit 3", &fakeExec{res: &cri.ExecResult{ExitCode: 3, Stdout: []byte("out"), Stderr: []byte("boom")}}, "command 'sh -c x' exited with 3: boom"},
		{"runtime error", &fakeExec{err: errors.New("no such container")}, "no such container"},
	} {
		err := Runner{Exec: c.exec}.Run(context.Background(), Target{Pod: pod, ID: "c1"}, execHook("sh", "-c", "x"), 0)
		if got := errString(err); got != c.wantErr {
			t.Errorf("%s: error %q, want %q", c.name, got, c.wantErr)
		}
		if strings.Join(c.exec.got, " ") != "c1 sh -c x" {
			t.Errorf("%s: ran %q", c.name, c.exec.got)
		}
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func TestRequest(t *testing.T) {
	spec := &corev1.Container{Name: "app", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}}
	for _, c := range []struct {
		name    string
		get     corev1.HTTPGetAction
		want    string
		wantErr bool
	}{
		{"pod IP, number", corev1.HTTPGetAction{Path: "/hook", Port: intstr.FromInt32(80)}, "http://10.1.2.3:80/hook", false},
		{"named port", corev1.HTTPGetAction{Path: "hook", Port: intstr.FromString("http")}, "http://10.1.2.3:8080/hook", false},
		{"unknown name", corev1.HTTPGetAction{Port: intstr.FromString("nope")}, "", true},
		{"host and https", corev1.HTTPGetAction{Host: "example.test", Scheme: corev1.URISchemeHTTPS, Port: intstr.FromInt32(443)}, "https://example.test:443", false},
		{"IPv6 host", corev1.HTTPGetAction{Host: "fd00::1", Port: intstr.FromInt32(80)}, "http://[fd00::1]:80", false},
	} {
		got := ""
		req, err := Request(&c.get, spec, "10.1.2.3")
		if err == nil {
			got = req.URL.String()
			if ua := req.Header.Get("User-Agent"); ua != "kube-lifecycle/1.37" {
				t.Errorf("%s: User-Agent %q, want the kubelet's kube-lifecycle/1.37", c.name, ua)
			}
		}
		if (err != nil) != c.wantErr || got != c.want {
			t.Errorf("%s: URL = %q, %v; want %q (error %v)", c.name, got, err, c.want, c.wantErr)
		}
	}
}

func TestRunHTTPGet(t *testing.T) {
	var header atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		header.Store(r.URL.Path + " " + r.Header.Get("X-Hook") + " " + r.UserAgent())
		w.WriteHeader(http.StatusInternalServerError) // a status code never fails a hook
	}))
	defer srv.Close()
	host, port, _ := net.SplitHostPort(strings.TrimPrefix(srv.URL, "http://"))
	spec := &corev1.Container{Name: "app", Ports: []corev1.ContainerPort{{Name: "web", ContainerPort: int32(mustAtoi(t, port))}}}
	h := &corev1.LifecycleHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/start", Port: intstr.FromString("web"),
		HTTPHeaders: []corev1.HTTPHeader{{Name: "X-Hook", Value: "yes"}}}}
	if err := (Runner{}).Run(context.Background(), Target{Pod: pod, Spec: spec, PodIP: host}, h, time.Second); err != nil {
		t.Fatalf("hook failed: %v", err)
	}
	if got := header.Load(); got != "/start yes kube-lifecycle/1.37" {
		t.Errorf("server saw %v", got)
	}
	srv.Close()
	if err := (Runner{}).Run(context.Background(), Target{Pod: pod, Spec: spec, PodIP: host}, h, time.Second); err == nil {
		t.Error("a refused request must fail the hook")
	}
}

func mustAtoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestRunSleepOnClock(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Unix(0, 0))
	done := make(chan error)
	go func() {
		done <- Runner{Clock: clk}.Run(context.Background(), Target{Pod: pod}, &corev1.LifecycleHandler{Sleep: &corev1.SleepAction{Seconds: 5}}, 0)
	}()
	for !clk.HasWaiters() {
		time.Sleep(time.Millisecond)
	}
	clk.Step(4 * time.Second)
	select {
	case <-done:
		t.Fatal("a 5s sleep hook ended after 4s")
	case <-time.After(20 * time.Millisecond):
	}
	clk.Step(time.Second)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestPostStartMessage(t *testing.T) {
	ee := ExecError{Command: []string{"false"}, ExitCode: 1, Stdout: "o", Stderr: "e"}
	for _, c := range []struct {
		name string
		h    *corev1.LifecycleHandler
		err  error
		want string
	}{
		{"exec", execHook("false"), ee, `Exec lifecycle hook ([false]) for Container "app" in Pod "web_ns(u1)" failed - error: command 'false' exited with 1: e, message: "oe"`},
		{"exec not run", execHook("false"), errors.New("no such container"), `Exec lifecycle hook ([false]) for Container "app" in Pod "web_ns(u1)" failed - error: no such container, message: ""`},
		{"http", &corev1.LifecycleHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/x"}}, errors.New("refused"), `HTTP lifecycle hook (/x) for Container "app" in Pod "web_ns(u1)" failed - error: refused`},
		{"sleep", &corev1.LifecycleHandler{Sleep: &corev1.SleepAction{Seconds: 1}}, errors.New("x"), `Lifecycle hook for Container "app" in Pod "web_ns(u1)" failed - error: x`},
	} {
		if got := PostStartMessage(pod, "app", c.h, c.err); got != c.want {
			t.Errorf("%s:\n got %s\nwant %s", c.name, got, c.want)
		}
	}
}

func TestPreStopWaitsAtMostTheGracePeriod(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Unix(0, 0))
	ex := &fakeExec{res: &cri.ExecResult{ExitCode: 1}, block: make(chan struct{})}
	failed := make(chan error, 1)
	type result struct {
		waited    time.Duration
		completed bool
	}
	res := make(chan result)
	go func() {
		w, c := Runner{Exec: ex, Clock: clk}.PreStop(context.Background(), Target{Pod: pod, ID: "c1"}, execHook("drain"), 10*time.Second,
			func(err error) { failed <- err })
		res <- result{w, c}
	}()
	for !clk.HasWaiters() {
		time.Sleep(time.Millisecond)
	}
	clk.Step(10500 * time.Millisecond)
	r := <-res
	if r.completed || r.waited != 10*time.Second {
		t.Errorf("hook still running: waited %v completed %v, want 10s (whole seconds) and not completed", r.waited, r.completed)
	}
	// the hook goes on after the wait; its failure is still reported
	close(ex.block)
	if err := <-failed; err == nil || !strings.Contains(err.Error(), "exited with 1") {
		t.Errorf("failure reported as %v", err)
	}

	// a hook that ends early: the wait is the hook's time
	ex2 := &fakeExec{res: &cri.ExecResult{}}
	w, c := Runner{Exec: ex2, Clock: clk}.PreStop(context.Background(), Target{Pod: pod, ID: "c1"}, execHook("drain"), 10*time.Second, nil)
	if !c || w != 0 {
		t.Errorf("quick hook: waited %v completed %v", w, c)
	}
}
