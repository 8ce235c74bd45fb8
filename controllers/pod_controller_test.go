package controllers

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/record"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/nodekeeper/nodekeeper/api/v1alpha1"
	"github.com/nodekeeper/nodekeeper/internal/podplan"
	"github.com/nodekeeper/nodekeeper/runtime/cri"
	"github.com/nodekeeper/nodekeeper/runtime/cri/fake"
)

const busybox = "docker.io/library/busybox:local"

type podAgent struct {
	node    string
	ns      string
	runtime *fake.Runtime
	cfg     *v1alpha1.AgentConfiguration
}

// startPodReconciler runs a PodReconciler for node against rt until the spec ends
// (or stop is called).
func startPodReconciler(node string, rt *fake.Runtime, rootDir string) {
	startPodReconcilerWith(node, rt, rootDir, nil)
}

// startPodReconcilerWith is startPodReconciler whose reconciler talks to the API server
// through wrap(the manager's client) (nil: the client itself).
func startPodReconcilerWith(node string, rt *fake.Runtime, rootDir string, wrap func(client.Client) client.Client) {
	cfg := &v1alpha1.AgentConfiguration{NodeName: node, RootDir: rootDir, ClusterDNS: []string{"10.0.0.10"}}
	setTestDefaults(cfg)
	recorder := kubeletRecorder(node)
	startManager(func(mgr ctrl.Manager) error {
		c := mgr.GetClient()
		if wrap != nil {
			c = wrap(c)
		}
		return (&PodReconciler{
			Client: c, Runtime: rt, Recorder: recorder, Config: cfg,
			HostIP: "192.0.2.10", RelistPeriod: 100 * time.Millisecond, EvictionPeriod: 200 * time.Millisecond,
			Backoff:  podplan.BackoffPolicy{Base: 500 * time.Millisecond, Max: 2 * time.Second, Reset: 10 * time.Minute},
			AppArmor: func() error { return errors.New("AppArmor is not enabled on the host") }, // whatever this machine has
		}).SetupWithManager(mgr)
	})
}

// kubeletRecorder is main's event recorder for node, until the spec ends.
func kubeletRecorder(node string) record.EventRecorder {
	ctx, cancel := context.WithCancel(context.Background())
	DeferCleanup(cancel)
	rec, err := NewEventRecorder(ctx, env.Config, node)
	Expect(err).NotTo(HaveOccurred())
	return rec
}

func newPodAgent() *podAgent { return newPodAgentOn(fake.New(), nil) }

// newPodAgentOn is newPodAgent on rt, its reconciler's API client wrapped by wrap
// (startPodReconcilerWith).
func newPodAgentOn(rt *fake.Runtime, wrap func(client.Client) client.Client) *podAgent {
	a := &podAgent{node: "pods-" + rand.String(5), ns: "pods-" + rand.String(5), runtime: rt}
	a.runtime.LoadImage(busybox, 1<<20)
	Expect(k8sClient.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: a.ns}})).To(Succeed())
	a.cfg = &v1alpha1.AgentConfiguration{RootDir: GinkgoT().TempDir()}
	startPodReconcilerWith(a.node, a.runtime, a.cfg.RootDir, wrap)
	return a
}

func (a *podAgent) pod(name string, policy corev1.RestartPolicy, mutate func(*corev1.Pod)) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: a.ns, Name: name},
		Spec: corev1.PodSpec{NodeName: a.node, RestartPolicy: policy, TerminationGracePeriodSeconds: ptr.To(int64(1)),
			Containers: []corev1.Container{{Name: "app", Image: busybox, Command: []string{"sleep", "3600"}}}}}
	if mutate != nil {
		mutate(p)
	}
	Expect(k8sClient.Create(context.Background(), p)).To(Succeed())
	return p
}

func getPod(p *corev1.Pod) *corev1.Pod {
	out := &corev1.Pod{}
	Expect(k8sClient.Get(context.Background(), client.ObjectKeyFromObject(p), out)).To(Succeed())
	return out
}

func phase(p *corev1.Pod) func() corev1.PodPhase {
	return func() corev1.PodPhase { return getPod(p).Status.Phase }
}

func (a *podAgent) containers(uid types.UID, name string) []*runtimeapi.Container {
	cs, err := a.runtime.ListContainers(context.Background(), &runtimeapi.ContainerFilter{LabelSelector: map[string]string{
		podplan.LabelPodUID: string(uid), podplan.LabelContainerName: name}})
	Expect(err).NotTo(HaveOccurred())
	return cs
}

func (a *podAgent) running(uid types.UID, name string) string {
	for _, c := range a.containers(uid, name) {
		if c.State == runtimeapi.ContainerState_CONTAINER_RUNNING {
			return c.Id
		}
	}
	return ""
}

func podCondition(p *corev1.Pod, t corev1.PodConditionType) corev1.ConditionStatus {
	for _, c := range p.Status.Conditions {
		if c.Type == t {
			return c.Status
		}
	}
	return ""
}

var _ = Describe("PodReconciler on the fake runtime", func() {
	It("runs init containers in order, then the app, and reports a Running, Ready pod", func() {
		a := newPodAgent()
		p := a.pod("web", corev1.RestartPolicyAlways, func(p *corev1.Pod) {
			p.Spec.InitContainers = []corev1.Container{
				{Name: "init1", Image: busybox, Command: []string{"true"}},
				{Name: "init2", Image: busybox, Command: []string{"true"}},
			}
			p.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "A", Value: "x"}, {Name: "B", Value: "$(A)-y"},
				{Name: "POD", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}}}
		})
		p = getPod(p)
		// init1 runs alone; finish it, then init2, then the app starts
		var id string
		Eventually(func() string { id = a.running(p.UID, "init1"); return id }, 10*time.Second, 50*time.Millisecond).ShouldNot(BeEmpty())
		Expect(a.containers(p.UID, "init2")).To(BeEmpty())
		Expect(a.containers(p.UID, "app")).To(BeEmpty())
		Expect(getPod(p).Status.Phase).To(Equal(corev1.PodPending))
		Expect(a.runtime.Exit(id, 0)).To(Succeed())
		Eventually(func() string { id = a.running(p.UID, "init2"); return id }, 10*time.Second, 50*time.Millisecond).ShouldNot(BeEmpty())
		Expect(a.runtime.Exit(id, 0)).To(Succeed())
		Eventually(phase(p), 10*time.Second, 50*time.Millisecond).Should(Equal(corev1.PodRunning))
		Eventually(func() corev1.ConditionStatus { return podCondition(getPod(p), corev1.PodReady) }, 10*time.Second, 50*time.Millisecond).
			Should(Equal(corev1.ConditionTrue))
		st := getPod(p).Status
		Expect(st.PodIP).To(HavePrefix("10.244.0."))
		Expect(st.HostIP).To(Equal("192.0.2.10"))
		Expect(st.StartTime).NotTo(BeNil())
		Expect(st.QOSClass).To(Equal(corev1.PodQOSBestEffort))
		Expect(st.InitContainerStatuses).To(HaveLen(2))
		Expect(st.InitContainerStatuses[1].State.Terminated.Reason).To(Equal("Completed"))
		cs := st.ContainerStatuses[0]
		Expect(cs.Ready).To(BeTrue())
		Expect(cs.ContainerID).To(HavePrefix("fake-runtime://"))
		Expect(cs.ImageID).NotTo(BeEmpty())
		Expect(*cs.Started).To(BeTrue())

		app := a.containers(p.UID, "app")[0]
		status, err := a.runtime.ContainerStatus(context.Background(), app.Id)
		Expect(err).NotTo(HaveOccurred())
		Expect(status.Labels).To(HaveKeyWithValue(podplan.LabelManaged, "true"))
		Expect(status.Annotations).To(HaveKey(podplan.AnnotationHash))

		Eventually(func() []string {
			evs := &corev1.EventList{}
			Expect(k8sClient.List(context.Background(), evs, client.InNamespace(a.ns))).To(Succeed())
			var r []string
			for _, e := range evs.Items {
				r = append(r, e.Reason)
			}
			return r
		}, 10*time.Second, 100*time.Millisecond).Should(ContainElements("Created", "Started"))
		Expect(eventsIn(a.ns)()).To(ContainElement(`Pulled: Container image "` + busybox + `" already present on machine`))
	})

	It("records its events as the kubelet: source kubelet on the node, container events with the container's fieldPath", func() {
		a := newPodAgent()
		p := a.pod("evsrc", corev1.RestartPolicyAlways, func(p *corev1.Pod) {
			p.Spec.InitContainers = []corev1.Container{{Name: "setup", Image: busybox, Command: []string{"true"}}}
		})
		p = getPod(p)
		var id string
		Eventually(func() string { id = a.running(p.UID, "setup"); return id }, 10*time.Second, 50*time.Millisecond).ShouldNot(BeEmpty())
		Expect(a.runtime.Exit(id, 0)).To(Succeed())
		Eventually(phase(p), 10*time.Second, 50*time.Millisecond).Should(Equal(corev1.PodRunning))
		Expect(k8sClient.Delete(context.Background(), p)).To(Succeed())
		// every event: "reason fieldPath", once its source and reporter are checked
		seen := func() []string {
			evs := &corev1.EventList{}
			Expect(k8sClient.List(context.Background(), evs, client.InNamespace(a.ns))).To(Succeed())
			var out []string
			for _, e := range evs.Items {
				Expect(e.Source).To(Equal(corev1.EventSource{Component: "kubelet", Host: a.node}), "%s %s", e.Reason, e.Message)
				Expect(e.ReportingController).To(Equal("kubelet"))
				Expect(e.ReportingInstance).To(Equal(a.node))
				Expect(e.InvolvedObject.Kind).To(Equal("Pod"))
				Expect(e.InvolvedObject.APIVersion).To(Equal("v1"))
				Expect(e.InvolvedObject.Name).To(Equal(p.Name))
				Expect(e.InvolvedObject.UID).To(Equal(p.UID))
				out = append(out, e.Reason+" "+e.InvolvedObject.FieldPath+": "+e.Message)
			}
			return out
		}
		Eventually(seen, 10*time.Second, 100*time.Millisecond).Should(ContainElements(
			`Pulled spec.initContainers{setup}: Container image "`+busybox+`" already present on machine`,
			"Created spec.initContainers{setup}: Container created",
			"Started spec.initContainers{setup}: Container started",
			`Pulled spec.containers{app}: Container image "`+busybox+`" already present on machine`,
			"Created spec.containers{app}: Container created",
			"Started spec.containers{app}: Container started",
			"Killing spec.containers{app}: Stopping container app",
		))
	})

	It("re-creates a sandbox that died, with a SandboxChanged event, and restarts the containers in it", func() {
		a := newPodAgent()
		p := a.pod("sbdies", corev1.RestartPolicyAlways, nil)
		Eventually(phase(p), 10*time.Second, 50*time.Millisecond).Should(Equal(corev1.PodRunning))
		p = getPod(p)
		sbs, err := a.runtime.ListPodSandbox(context.Background(), &runtimeapi.PodSandboxFilter{LabelSelector: map[string]string{podplan.LabelPodUID: string(p.UID)}})
		Expect(err).NotTo(HaveOccurred())
		Expect(sbs).To(HaveLen(1))
		Expect(a.runtime.StopPodSandbox(context.Background(), sbs[0].Id)).To(Succeed()) // its network and containers are gone
		Eventually(func() []*runtimeapi.PodSandbox {
			l, _ := a.runtime.ListPodSandbox(context.Background(), &runtimeapi.PodSandboxFilter{LabelSelector: map[string]string{podplan.LabelPodUID: string(p.UID)},
				State: &runtimeapi.PodSandboxStateValue{State: runtimeapi.PodSandboxState_SANDBOX_READY}})
			return l
		}, 10*time.Second, 50*time.Millisecond).Should(ContainElement(HaveField("Metadata.Attempt", uint32(1))))
		Eventually(func() int32 {
			cs := getPod(p).Status.ContainerStatuses
			if len(cs) == 0 || cs[0].State.Running == nil {
				return -1
			}
			return cs[0].RestartCount
		}, 10*time.Second, 50*time.Millisecond).Should(Equal(int32(1)))
		// events are recorded asynchronously: wait for it
		Eventually(eventsIn(a.ns), 10*time.Second, 100*time.Millisecond).Should(ContainElement("SandboxChanged: Pod sandbox changed, it will be killed and re-created."))
	})

	It("restarts a crashed container with back-off and shows CrashLoopBackOff", func() {
		a := newPodAgent()
		p := a.pod("crash", corev1.RestartPolicyAlways, nil)
		p = getPod(p)
		var id string
		Eventually(func() string { id = a.running(p.UID, "app"); return id }, 10*time.Second, 50*time.Millisecond).ShouldNot(BeEmpty())
		Expect(a.runtime.Exit(id, 1)).To(Succeed())
		// first restart is immediate
		Eventually(func() int32 {
			cs := getPod(p).Status.ContainerStatuses
			if len(cs) == 0 || cs[0].State.Running == nil {
				return -1
			}
			return cs[0].RestartCount
		}, 10*time.Second, 50*time.Millisecond).Should(BeEquivalentTo(1))
		lt := getPod(p).Status.ContainerStatuses[0].LastTerminationState.Terminated
		Expect(lt).NotTo(BeNil())
		Expect(lt.ExitCode).To(BeEquivalentTo(1))
		// the second crash waits for the back-off
		Eventually(func() string { id = a.running(p.UID, "app"); return id }, 10*time.Second, 50*time.Millisecond).ShouldNot(BeEmpty())
		Expect(a.runtime.Exit(id, 1)).To(Succeed())
		Eventually(func() string {
			cs := getPod(p).Status.ContainerStatuses
			if len(cs) == 0 || cs[0].State.Waiting == nil {
				return ""
			}
			return cs[0].State.Waiting.Reason
		}, 10*time.Second, 20*time.Millisecond).Should(Equal("CrashLoopBackOff"))
		Eventually(func() int32 {
			cs := getPod(p).Status.ContainerStatuses
			if len(cs) == 0 || cs[0].State.Running == nil {
				return -1
			}
			return cs[0].RestartCount
		}, 10*time.Second, 50*time.Millisecond).Should(BeEquivalentTo(2))
	})

	It("ends a restartPolicy Never pod Failed with the exit code, and OnFailure Succeeded on exit 0", func() {
		a := newPodAgent()
		never := a.pod("never", corev1.RestartPolicyNever, nil)
		onf := a.pod("onfailure", corev1.RestartPolicyOnFailure, nil)
		never, onf = getPod(never), getPod(onf)
		var id1, id2 string
		Eventually(func() string { id1 = a.running(never.UID, "app"); return id1 }, 10*time.Second, 50*time.Millisecond).ShouldNot(BeEmpty())
		Eventually(func() string { id2 = a.running(onf.UID, "app"); return id2 }, 10*time.Second, 50*time.Millisecond).ShouldNot(BeEmpty())
		Expect(a.runtime.Exit(id1, 3)).To(Succeed())
		Expect(a.runtime.Exit(id2, 0)).To(Succeed())
		Eventually(phase(never), 10*time.Second, 50*time.Millisecond).Should(Equal(corev1.PodFailed))
		Eventually(phase(onf), 10*time.Second, 50*time.Millisecond).Should(Equal(corev1.PodSucceeded))
		Expect(getPod(never).Status.ContainerStatuses[0].State.Terminated.ExitCode).To(BeEquivalentTo(3))
		Consistently(func() int { return len(a.containers(never.UID, "app")) }, time.Second, 100*time.Millisecond).Should(Equal(1))
		Expect(podCondition(getPod(onf), corev1.PodReady)).To(Equal(corev1.ConditionFalse))
	})

	It("rejects a pod for another OS or with a forbidden sysctl, and ends one past its activeDeadlineSeconds", func() {
		a := newPodAgent()
		win := a.pod("win", corev1.RestartPolicyAlways, func(p *corev1.Pod) { p.Spec.OS = &corev1.PodOS{Name: corev1.Windows} })
		sysctl := a.pod("sysctl", corev1.RestartPolicyAlways, func(p *corev1.Pod) {
			p.Spec.SecurityContext = &corev1.PodSecurityContext{Sysctls: []corev1.Sysctl{{Name: "kernel.msgmax", Value: "1"}}}
		})
		deadline := a.pod("deadline", corev1.RestartPolicyAlways, func(p *corev1.Pod) { p.Spec.ActiveDeadlineSeconds = ptr.To(int64(2)) })
		for p, reason := range map[*corev1.Pod]string{win: "PodOSNotSupported", sysctl: "SysctlForbidden", deadline: "DeadlineExceeded"} {
			Eventually(func() string { return string(getPod(p).Status.Phase) + "/" + getPod(p).Status.Reason }, 10*time.Second, 50*time.Millisecond).
				Should(Equal("Failed/"+reason), p.Name)
		}
		Expect(getPod(win).Status.Message).To(Equal("Pod was rejected: Failed to admit pod as the OS field doesn't match node OS"))
		Expect(getPod(sysctl).Status.Message).To(Equal(`Pod was rejected: forbidden sysctl: "kernel.msgmax" not allowlisted`))
		for _, p := range []*corev1.Pod{win, sysctl} {
			sbs, err := a.runtime.ListPodSandbox(context.Background(), &runtimeapi.PodSandboxFilter{LabelSelector: map[string]string{podplan.LabelPodUID: string(getPod(p).UID)}})
			Expect(err).NotTo(HaveOccurred())
			Expect(sbs).To(BeEmpty(), "a rejected pod never runs")
		}
		Expect(a.running(getPod(deadline).UID, "app")).To(BeEmpty(), "a pod past its deadline is stopped")
	})

	It("starts an ephemeral container added to a running pod once, in its target's PID namespace, and reports it apart", func() {
		a := newPodAgent()
		p := a.pod("debugged", corev1.RestartPolicyAlways, nil)
		p = getPod(p)
		var app string
		Eventually(func() string { app = a.running(p.UID, "app"); return app }, 10*time.Second, 50*time.Millisecond).ShouldNot(BeEmpty())
		Eventually(func() error { // the agent writes the status meanwhile: retry on conflicts
			p = getPod(p)
			p.Spec.EphemeralContainers = []corev1.EphemeralContainer{{TargetContainerName: "app",
				EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "debugger", Image: busybox, Command: []string{"sh"},
					ImagePullPolicy: corev1.PullIfNotPresent, TerminationMessagePolicy: corev1.TerminationMessageReadFile}}}
			return k8sClient.SubResource("ephemeralcontainers").Update(context.Background(), p)
		}, 10*time.Second, 100*time.Millisecond).Should(Succeed())
		var dbg string
		Eventually(func() string { dbg = a.running(p.UID, "debugger"); return dbg }, 10*time.Second, 50*time.Millisecond).ShouldNot(BeEmpty())
		ns := a.runtime.ContainerConfig(dbg).GetLinux().GetSecurityContext().GetNamespaceOptions()
		Expect(ns.GetPid()).To(Equal(runtimeapi.NamespaceMode_TARGET))
		Expect(ns.GetTargetId()).To(Equal(app))
		Eventually(func() bool {
			st := getPod(p).Status
			return len(st.EphemeralContainerStatuses) == 1 && st.EphemeralContainerStatuses[0].State.Running != nil
		}, 10*time.Second, 50*time.Millisecond).Should(BeTrue())
		// it exits: it is not restarted, the pod runs on
		Expect(a.runtime.Exit(dbg, 0)).To(Succeed())
		Eventually(func() bool {
			st := getPod(p).Status
			return len(st.EphemeralContainerStatuses) == 1 && st.EphemeralContainerStatuses[0].State.Terminated != nil
		}, 10*time.Second, 50*time.Millisecond).Should(BeTrue())
		Consistently(func() int { return len(a.containers(p.UID, "debugger")) }, time.Second, 100*time.Millisecond).Should(Equal(1))
		Expect(getPod(p).Status.Phase).To(Equal(corev1.PodRunning))
		Expect(podCondition(getPod(p), corev1.PodReady)).To(Equal(corev1.ConditionTrue))
	})

	It("reports a missing image as ErrImagePull then ImagePullBackOff, and runs the other containers", func() {
		a := newPodAgent()
		p := a.pod("badimage", corev1.RestartPolicyAlways, func(p *corev1.Pod) {
			p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "missing", Image: "example.com/nope:v1"})
		})
		// every status written since the pod was created, in order (ErrImagePull may last
		// only until the next reconcile, which polling can miss)
		reasons := watchWaitingReasons(p, "missing")
		p = getPod(p)
		Eventually(reasons, 10*time.Second, 20*time.Millisecond).Should(ContainElement("ErrImagePull"))
		Eventually(reasons, 10*time.Second, 20*time.Millisecond).Should(ContainElement("ImagePullBackOff"))
		seen := reasons()
		first := func(r string) int {
			for i, x := range seen {
				if x == r {
					return i
				}
			}
			return -1
		}
		Expect(first("ErrImagePull")).To(BeNumerically("<", first("ImagePullBackOff")), "ErrImagePull comes first: %v", seen)
		Eventually(func() string { return a.running(p.UID, "app") }, 10*time.Second, 50*time.Millisecond).ShouldNot(BeEmpty())
		for _, cs := range getPod(p).Status.ContainerStatuses {
			if cs.Name == "missing" {
				Expect(cs.State.Waiting.Message).To(ContainSubstring("example.com/nope:v1"))
			}
		}
		Expect(getPod(p).Status.Phase).To(Equal(corev1.PodPending))
	})

	It("stops a deleted pod's containers, removes its sandbox and lets it leave the API", func() {
		a := newPodAgent()
		hooks := make(chan []string, 10)
		a.runtime.SetExecHandler(func(_ context.Context, _ string, cmd []string) (*cri.ExecResult, error) {
			hooks <- cmd
			return &cri.ExecResult{}, nil
		})
		p := a.pod("gone", corev1.RestartPolicyAlways, func(p *corev1.Pod) {
			p.Spec.Containers[0].Lifecycle = &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{
				Exec: &corev1.ExecAction{Command: []string{"sh", "-c", "echo bye"}}}}
		})
		p = getPod(p)
		var id string
		Eventually(func() string { id = a.running(p.UID, "app"); return id }, 10*time.Second, 50*time.Millisecond).ShouldNot(BeEmpty())
		// the log in podLogsDir, linked from containerLogsDir as the kubelet does
		logDir := filepath.Join(a.cfg.RootDir, "logs", a.ns+"_gone_"+string(p.UID))
		link := filepath.Join(a.cfg.RootDir, "containers", "gone_"+a.ns+"_app-"+id+".log")
		Eventually(func() (string, error) { return os.Readlink(link) }, 10*time.Second, 50*time.Millisecond).
			Should(Equal(filepath.Join(logDir, "app", "0.log")))
		Expect(k8sClient.Delete(context.Background(), p)).To(Succeed())
		Eventually(func() bool {
			err := k8sClient.Get(context.Background(), client.ObjectKeyFromObject(p), &corev1.Pod{})
			return apierrors.IsNotFound(err)
		}, 10*time.Second, 50*time.Millisecond).Should(BeTrue())
		sbs, err := a.runtime.ListPodSandbox(context.Background(), &runtimeapi.PodSandboxFilter{LabelSelector: map[string]string{podplan.LabelPodUID: string(p.UID)}})
		Expect(err).NotTo(HaveOccurred())
		Expect(sbs).To(BeEmpty())
		Expect(a.containers(p.UID, "app")).To(BeEmpty())
		Expect(hooks).To(Receive(Equal([]string{"sh", "-c", "echo bye"})), "the preStop hook ran before the stop")
		_, err = os.Lstat(link)
		Expect(os.IsNotExist(err)).To(BeTrue(), "the log link goes with the container")
		Expect(logDir).NotTo(BeADirectory(), "the pod's logs go with the pod")
	})

	It("never touches what it did not create, and removes its own orphans", func() {
		a := newPodAgent()
		ctx := context.Background()
		foreign, err := a.runtime.RunPodSandbox(ctx, &runtimeapi.PodSandboxConfig{
			Metadata: &runtimeapi.PodSandboxMetadata{Name: "foreign", Namespace: "x", Uid: "foreign-uid"}, Labels: map[string]string{"owner": "someone"}}, "")
		Expect(err).NotTo(HaveOccurred())
		orphan, err := a.runtime.RunPodSandbox(ctx, &runtimeapi.PodSandboxConfig{
			Metadata: &runtimeapi.PodSandboxMetadata{Name: "orphan", Namespace: a.ns, Uid: "orphan-uid"},
			Labels: map[string]string{podplan.LabelManaged: "true", podplan.LabelPodUID: "orphan-uid",
				podplan.LabelPodName: "orphan", podplan.LabelPodNamespace: a.ns}}, "")
		Expect(err).NotTo(HaveOccurred())
		Eventually(func() bool {
			_, err := a.runtime.PodSandboxStatus(ctx, orphan)
			return err != nil
		}, 10*time.Second, 100*time.Millisecond).Should(BeTrue(), "our orphan sandbox must be removed")
		st, err := a.runtime.PodSandboxStatus(ctx, foreign)
		Expect(err).NotTo(HaveOccurred())
		Expect(st.State).To(Equal(runtimeapi.PodSandboxState_SANDBOX_READY))
	})

	It("adopts running containers after an agent restart without restarting them", func() {
		node := "pods-" + rand.String(5)
		ns := "pods-" + rand.String(5)
		rt := fake.New()
		rt.LoadImage(busybox, 1<<20)
		Expect(k8sClient.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})).To(Succeed())
		root := GinkgoT().TempDir()
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "survivor"},
			Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "app", Image: busybox}}}}
		Expect(k8sClient.Create(context.Background(), p)).To(Succeed())
		a := &podAgent{runtime: rt}

		// first agent: runs the pod, then stops (the spec's DeferCleanup order: we stop it by hand)
		ctx, cancel := context.WithCancel(context.Background())
		mgr, err := ctrl.NewManager(env.Config, managerOptions())
		Expect(err).NotTo(HaveOccurred())
		cfg := &v1alpha1.AgentConfiguration{NodeName: node, RootDir: root}
		setTestDefaults(cfg)
		Expect((&PodReconciler{Client: mgr.GetClient(), Runtime: rt, Recorder: mgr.GetEventRecorderFor("kubelet"), Config: cfg,
			RelistPeriod: 100 * time.Millisecond}).SetupWithManager(mgr)).To(Succeed())
		done := make(chan struct{})
		go func() { defer close(done); _ = mgr.Start(ctx) }()
		p = getPod(p)
		Eventually(phase(p), 10*time.Second, 50*time.Millisecond).Should(Equal(corev1.PodRunning))
		before := a.running(p.UID, "app")
		cancel()
		<-done

		// second agent on the same runtime
		startPodReconciler(node, rt, root)
		Consistently(func() string { return a.running(p.UID, "app") }, 2*time.Second, 100*time.Millisecond).Should(Equal(before))
		Expect(a.containers(p.UID, "app")).To(HaveLen(1))
		Expect(getPod(p).Status.ContainerStatuses[0].RestartCount).To(BeEquivalentTo(0))
	})
})

// watchWaitingReasons records, from a watch on the pod starting at p's resourceVersion,
// every waiting reason the named container's status goes through, until the spec ends.
func watchWaitingReasons(p *corev1.Pod, container string) func() []string {
	cs, err := kubernetes.NewForConfig(env.Config)
	Expect(err).NotTo(HaveOccurred())
	w, err := cs.CoreV1().Pods(p.Namespace).Watch(context.Background(), metav1.ListOptions{FieldSelector: "metadata.name=" + p.Name, ResourceVersion: p.ResourceVersion})
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(w.Stop)
	var mu sync.Mutex
	var seen []string
	go func() {
		for ev := range w.ResultChan() {
			pod, ok := ev.Object.(*corev1.Pod)
			if !ok {
				continue
			}
			for _, st := range pod.Status.ContainerStatuses {
				if st.Name == container && st.State.Waiting != nil {
					mu.Lock()
					if len(seen) == 0 || seen[len(seen)-1] != st.State.Waiting.Reason {
						seen = append(seen, st.State.Waiting.Reason)
					}
					mu.Unlock()
				}
			}
		}
	}()
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), seen...)
	}
}
