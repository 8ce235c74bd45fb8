// Package hooks runs containers' lifecycle hooks (postStart, preStop) as the kubelet's
// lifecycle handler runner does: exec in the container, HTTP GET against the pod, or a
// sleep. It needs of the runtime only ExecSync, and waits on an injected clock.
package hooks

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/clock"

	"github.com/nodekeeper/nodekeeper/internal/probehttp"
	"github.com/nodekeeper/nodekeeper/runtime/cri"
)

// Execer runs a command in a running container (cri.Runtime has it).
type Execer interface {
	ExecSync(ctx context.Context, id string, cmd []string, timeout time.Duration) (*cri.ExecResult, error)
}

// Runner runs hooks.
type Runner struct {
	Exec Execer
	// HTTP sends httpGet hooks; nil: no keep-alive and no certificate checks for https,
	// as upstream's hooks and probes.
	HTTP *http.Client
	// Clock is what sleep hooks and the preStop wait use (nil: the real clock).
	Clock clock.Clock
}

// Target is the container a hook runs against.
type Target struct {
	Pod *corev1.Pod
	// Spec is the container's spec (its named ports resolve an httpGet's named port).
	Spec *corev1.Container
	// ID is the running container's runtime ID.
	ID string
	// PodIP is the default host of an httpGet hook.
	PodIP string
}

var defaultHTTP = &http.Client{Transport: &http.Transport{DisableKeepAlives: true,
	TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // upstream semantics

func (r Runner) clock() clock.Clock {
	if r.Clock == nil {
		return clock.RealClock{}
	}
	return r.Clock
}

// ExecError is an exec hook whose command ran and failed, with what it printed.
type ExecError struct {
	Command  []string
	ExitCode int32
	Stdout   string
	Stderr   string
}

func (e ExecError) Error() string {
	return fmt.Sprintf("command '%s' exited with %d: %s", strings.Join(e.Command, " "), e.ExitCode, e.Stderr)
}

// Run runs handler h against t. timeout 0 means only ctx bounds it. As upstream, an
// httpGet hook fails only when the request fails, whatever the status code.
func (r Runner) Run(ctx context.Context, t Target, h *corev1.LifecycleHandler, timeout time.Duration) error {
	switch {
	case h.Exec != nil:
		res, err := r.Exec.ExecSync(ctx, t.ID, h.Exec.Command, timeout)
		if err != nil {
			return err
		}
		if res.ExitCode != 0 {
			return ExecError{Command: h.Exec.Command, ExitCode: res.ExitCode, Stdout: string(res.Stdout), Stderr: string(res.Stderr)}
		}
	case h.HTTPGet != nil:
		req, err := Request(h.HTTPGet, t.Spec, t.PodIP)
		if err != nil {
			return err
		}
		hctx, cancel := ctx, context.CancelFunc(func() {})
		if timeout > 0 {
			hctx, cancel = context.WithTimeout(ctx, timeout)
		}
		defer cancel()
		req = req.WithContext(hctx)
		c := r.HTTP
		if c == nil {
			c = defaultHTTP
		}
		resp, err := c.Do(req)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 10<<10))
		_ = resp.Body.Close()
	case h.Sleep != nil:
		select {
		case <-ctx.Done():
		case <-r.clock().After(time.Duration(h.Sleep.Seconds) * time.Second):
		}
	}
	return nil
}

// Request is the request an httpGet hook sends: built as a probe's (internal/probehttp:
// host or else podIP, scheme, path, headers, Accept), as upstream's hook runner does,
// with the kubelet's lifecycle User-Agent; a named port is resolved through the
// container's ports.
func Request(g *corev1.HTTPGetAction, spec *corev1.Container, podIP string) (*http.Request, error) {
	port := g.Port.IntValue()
	if g.Port.Type == intstr.String {
		port = 0
		if spec != nil {
			for _, cp := range spec.Ports {
				if cp.Name == g.Port.StrVal {
					port = int(cp.ContainerPort)
				}
			}
		}
		if port == 0 {
			return nil, fmt.Errorf("couldn't find port: %s in %s", g.Port.StrVal, containerName(spec))
		}
	}
	return probehttp.NewRequestAs(g, port, podIP, probehttp.LifecycleUserAgent)
}

func containerName(spec *corev1.Container) string {
	if spec == nil {
		return "the container"
	}
	return spec.Name
}

// PostStartMessage is upstream's event message (FailedPostStartHook) for a postStart
// hook h of container name in pod that failed with err.
func PostStartMessage(pod *corev1.Pod, name string, h *corev1.LifecycleHandler, err error) string {
	who := fmt.Sprintf("%s_%s(%s)", pod.Name, pod.Namespace, pod.UID)
	switch {
	case h.Exec != nil:
		var out string
		var ee ExecError
		if errors.As(err, &ee) {
			out = ee.Stdout + ee.Stderr
		}
		return fmt.Sprintf("Exec lifecycle hook (%v) for Container %q in Pod %q failed - error: %v, message: %q", h.Exec.Command, name, who, err, out)
	case h.HTTPGet != nil:
		return fmt.Sprintf("HTTP lifecycle hook (%s) for Container %q in Pod %q failed - error: %v", h.HTTPGet.Path, name, who, err)
	}
	return fmt.Sprintf("Lifecycle hook for Container %q in Pod %q failed - error: %v", name, who, err)
}

// PreStopSlack is how long a preStop hook may outlive the grace period it was given
// before its call is abandoned: it normally ends with the container, which is killed
// at most 2s after the grace period.
const PreStopSlack = 2 * time.Minute

// PreStop is upstream's executePreStopHook: the hook runs on its own (an exec hook
// without a timeout of its own, as upstream's RunInContainer with timeout 0; an httpGet
// or sleep hook ends with the grace period), and the caller waits for it at most the
// grace period. It returns the time waited, in whole seconds as upstream's, and whether
// the hook completed in it. failed is called (from the hook's goroutine, perhaps after
// PreStop returned) with a hook's error.
func (r Runner) PreStop(ctx context.Context, t Target, h *corev1.LifecycleHandler, grace time.Duration, failed func(error)) (waited time.Duration, completed bool) {
	clk := r.clock()
	start := clk.Now()
	done := make(chan struct{})
	hctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), grace+PreStopSlack)
	go func() {
		defer close(done)
		defer cancel()
		timeout := time.Duration(0)
		if h.Exec == nil {
			timeout = grace
		}
		if err := r.Run(hctx, t, h, timeout); err != nil && failed != nil {
			failed(err)
		}
	}()
	tm := clk.NewTimer(grace)
	defer tm.Stop()
	select {
	case <-tm.C():
	case <-done:
		completed = true
	case <-ctx.Done():
	}
	return clk.Since(start).Truncate(time.Second), completed
}
