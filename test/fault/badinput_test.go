package fault

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

// a bad pod and what the node must say about it: a container waiting/terminated reason
// (or, while volumes cannot be set up, none) and an Event
type badPod struct {
	name, spec string
	reasons    []string // the container's waiting or last-terminated reason, one of
	events     []string // an Event about the pod with one of these reasons
	message    string   // in the container reason's message or the Event's
	// running: the container must be running, not ready and never restarted (probes
	// that error or fail readiness do not restart it, as the kubelet's)
	running bool
	texts   []string // each in the messages of the pod's Events
}

var badPods = []badPod{
	{name: "bad-image", spec: `containers: [{name: c, image: "localhost:1/no/such:image"}]`,
		reasons: []string{"ErrImagePull", "ImagePullBackOff"}, events: []string{"Failed"}, message: "localhost:1/no/such:image"},
	{name: "missing-configmap", spec: `containers: [{name: c, image: docker.io/library/busybox:local, command: [sleep, "3600"], envFrom: [{configMapRef: {name: nope}}]}]`,
		reasons: []string{"CreateContainerConfigError"}, events: []string{"Failed"}, message: `configmap "nope" not found`},
	{name: "missing-secret", spec: `volumes: [{name: s, secret: {secretName: nope}}]
  containers: [{name: c, image: docker.io/library/busybox:local, command: [sleep, "3600"], volumeMounts: [{name: s, mountPath: /s}]}]`,
		events: []string{"FailedMount"}, message: `secret "nope" not found`},
	{name: "impossible-hostpath", spec: `volumes: [{name: h, hostPath: {path: /nonexistent/fault/dir, type: Directory}}]
  containers: [{name: c, image: docker.io/library/busybox:local, command: [sleep, "3600"], volumeMounts: [{name: h, mountPath: /h}]}]`,
		events: []string{"FailedMount"}, message: "/nonexistent/fault/dir"},
	// one variable larger than the kernel takes for a single exec string (128 KiB)
	{name: "huge-env", spec: fmt.Sprintf(`containers: [{name: c, image: docker.io/library/busybox:local, command: [sleep, "3600"], env: [{name: HUGE, value: %q}]}]`, strings.Repeat("x", 200<<10)),
		reasons: []string{"RunContainerError", "StartError", "CrashLoopBackOff", "CreateContainerError"}, events: []string{"Failed", "BackOff"}},
	// as the kubelet: the exec of a missing binary is an error of the runtime (the
	// prober's probe.Unknown), thrown away after an "errored" event, so the container is
	// never restarted; the closed port fails readiness ("connection refused")
	{name: "bad-probe", spec: `containers: [{name: c, image: docker.io/library/busybox:local, command: [sleep, "3600"],
    livenessProbe: {exec: {command: [/no/such/probe]}, periodSeconds: 1, failureThreshold: 1},
    readinessProbe: {httpGet: {path: /, port: 9}, periodSeconds: 1}}]`,
		events: []string{"Unhealthy"}, running: true,
		texts: []string{"Liveness probe errored and resulted in unknown state", "/no/such/probe", "Readiness probe failed", "connection refused"}},
}

type podStatusView struct {
	Status struct {
		Phase             string
		ContainerStatuses []struct {
			Ready        bool
			RestartCount int32
			State        struct {
				Running    *struct{}
				Waiting    *struct{ Reason, Message string }
				Terminated *struct{ Reason, Message string }
			}
			LastState struct {
				Terminated *struct{ Reason, Message string }
			}
		}
	}
}

// containerReason is the pod's first container's waiting/terminated/last reason and message.
func containerReason(name string) (string, string) {
	p, ok := podStatus(name)
	if !ok {
		return "", ""
	}
	for _, c := range p.Status.ContainerStatuses {
		switch {
		case c.State.Waiting != nil && c.State.Waiting.Reason != "ContainerCreating":
			return c.State.Waiting.Reason, c.State.Waiting.Message
		case c.State.Terminated != nil:
			return c.State.Terminated.Reason, c.State.Terminated.Message
		case c.LastState.Terminated != nil:
			return c.LastState.Terminated.Reason, c.LastState.Terminated.Message
		}
	}
	return "", ""
}

func podStatus(name string) (podStatusView, bool) {
	var p podStatusView
	out, err := kubectl("get", "pod", name, "-o", "json")
	if err != nil {
		return p, false
	}
	Expect(json.Unmarshal([]byte(out), &p)).To(Succeed())
	return p, true
}

// runningUnready: the pod's container runs, is not ready and was never restarted.
func runningUnready(name string) bool {
	p, ok := podStatus(name)
	if !ok || len(p.Status.ContainerStatuses) != 1 {
		return false
	}
	c := p.Status.ContainerStatuses[0]
	return c.State.Running != nil && !c.Ready && c.RestartCount == 0
}

// podEvents: reason -> message of the Events about the pod (this one: not those of an
// earlier pod of the name, as with NK_FAULT_REUSE).
func podEvents(name string) map[string]string {
	ev := map[string]string{}
	uid, err := kubectl("get", "pod", name, "-o", "jsonpath={.metadata.uid}")
	if err != nil || uid == "" {
		return ev
	}
	out, err := kubectl("get", "events", "--field-selector", "involvedObject.kind=Pod,involvedObject.name="+name+",involvedObject.uid="+uid,
		"-o", `jsonpath={range .items[*]}{.reason}{"\t"}{.message}{"\n"}{end}`)
	if err != nil {
		return ev
	}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if r, m, ok := strings.Cut(l, "\t"); ok {
			ev[r] += m + " "
		}
	}
	return ev
}

func badInputCases() {
	It("turns each bad pod spec into a status reason and an Event, and keeps the agent up", func() {
		agent := readPID(pidFile("nodekeeper"))
		var manifest strings.Builder
		cases := badPods
		for _, b := range cases {
			fmt.Fprintf(&manifest, "---\napiVersion: v1\nkind: Pod\nmetadata: {name: %s}\nspec:\n  terminationGracePeriodSeconds: 1\n  %s\n", b.name, b.spec)
		}
		t0 := time.Now()
		applyManifest(manifest.String())
		var lines []string
		for _, b := range cases {
			var reason, cmsg string
			var ev map[string]string
			Eventually(func() bool {
				reason, cmsg = containerReason(b.name)
				ev = podEvents(b.name)
				okReason := len(b.reasons) == 0
				for _, r := range b.reasons {
					okReason = okReason || reason == r
				}
				var evMsg string
				okEvent := false
				for _, r := range b.events {
					if m, ok := ev[r]; ok {
						okEvent, evMsg = true, m
					}
				}
				var all strings.Builder
				for _, m := range ev {
					all.WriteString(m)
				}
				for _, t := range b.texts {
					okEvent = okEvent && strings.Contains(all.String(), t)
				}
				return okReason && okEvent && strings.Contains(cmsg+" "+evMsg, b.message) && (!b.running || runningUnready(b.name))
			}, 2*time.Minute, time.Second).Should(BeTrue(), func() string {
				// (a func: the values of the last poll, not of before the first)
				return fmt.Sprintf("pod %s: container reason %q (%s), running unready %v, events %v", b.name, reason, cmsg, runningUnready(b.name), ev)
			})
			if b.running {
				reason = "Running, not ready, 0 restarts"
			}
			var evs []string
			for r := range ev {
				evs = append(evs, r)
			}
			lines = append(lines, fmt.Sprintf("%s → %s [%s]", b.name, orDash(reason), strings.Join(evs, ",")))
		}
		figure("bad pod specs", "%d of %d reported with a reason and an Event within %v, agent never restarted: %s",
			len(cases), len(cases), time.Since(t0).Round(time.Second), strings.Join(lines, "; "))
		Expect(readPID(pidFile("nodekeeper"))).To(Equal(agent))
		Expect(alive(agent)).To(BeTrue(), "the agent died")
		// and the node still runs good pods next to the bad ones
		applyManifest(`apiVersion: v1
kind: Pod
metadata: {name: good-after-bad}
spec:
  terminationGracePeriodSeconds: 1
  containers: [{name: c, image: docker.io/library/busybox:local, command: [sleep, "3600"]}]
`)
		Eventually(func() (string, error) {
			return kubectl("get", "pod", "good-after-bad", "-o", "jsonpath={.status.phase}")
		},
			time.Minute, time.Second).Should(Equal("Running"))
	})
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
