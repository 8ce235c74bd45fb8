package controllers

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/rand"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/nodekeeper/nodekeeper/api/v1alpha1"
	"github.com/nodekeeper/nodekeeper/host"
	"github.com/nodekeeper/nodekeeper/internal/netnstest"
	"github.com/nodekeeper/nodekeeper/internal/podplan"
	"github.com/nodekeeper/nodekeeper/runtime/cri"
)

// These specs run the PodReconciler on a real containerd. `make test` starts one with
// hack/cri-up.sh in its own network namespace and exports NK_CRI_ENDPOINT and
// NK_CRI_NETNS; without them the specs are skipped.
var _ = Describe("PodReconciler on a real containerd", Label("containerd", "root"), Ordered, func() {
	var (
		rt    *cri.Remote
		netns string
		node  string
		ns    string
		stop  context.CancelFunc
		done  chan struct{}
		root  string
		// cgroupRoot keeps this suite's pod cgroups apart from any other agent's
		cgroupRoot string
		// relistPeriod is the agent's RelistPeriod
		relistPeriod = 200 * time.Millisecond
	)
	startAgent := func() {
		cfg := &v1alpha1.AgentConfiguration{NodeName: node, RootDir: root, StaticPodPath: filepath.Join(root, "manifests"),
			CgroupRoot: cgroupRoot, ClusterDNS: []string{"10.96.0.10"}, ContainerLogMaxSize: "64Ki", ContainerLogMaxFiles: 3}
		setTestDefaults(cfg)
		mgr, err := ctrl.NewManager(env.Config, managerOptions())
		Expect(err).NotTo(HaveOccurred())
		Expect((&PodReconciler{Client: mgr.GetClient(), Runtime: rt, Recorder: mgr.GetEventRecorderFor("kubelet"), Config: cfg,
			HostIP: "192.0.2.10", Cgroups: host.Cgroups{}, MemoryCapacity: 8 << 30, LogRotatePeriod: 300 * time.Millisecond, RelistPeriod: relistPeriod, StaticPodPeriod: 500 * time.Millisecond,
			Backoff: podplan.BackoffPolicy{Base: time.Second, Max: 4 * time.Second, Reset: 10 * time.Minute}}).SetupWithManager(mgr)).To(Succeed())
		var ctx context.Context
		ctx, stop = context.WithCancel(context.Background())
		done = make(chan struct{})
		go func() { defer close(done); _ = mgr.Start(ctx) }()
	}
	stopAgent := func() {
		stop()
		<-done
	}
	BeforeAll(func() {
		ep := os.Getenv("NK_CRI_ENDPOINT")
		netns = os.Getenv("NK_CRI_NETNS")
		if ep == "" || netns == "" {
			Skip("no containerd: run through `make test`, or start hack/cri-up.sh and set NK_CRI_ENDPOINT and NK_CRI_NETNS")
		}
		var err error
		rt, err = cri.Dial(cri.RemoteOptions{Endpoint: ep})
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(rt.Close)
		node = "ctr-" + rand.String(5)
		ns = "ctr-" + rand.String(5)
		root = GinkgoT().TempDir()
		cgroupRoot = "/nk-test-" + node
		DeferCleanup(func() { _ = host.Cgroups{}.Remove(cgroupRoot) })
		Expect(k8sClient.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})).To(Succeed())
		// mirror pods are owned by the node: it must be registered
		nodeObj := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}}
		Expect(k8sClient.Create(context.Background(), nodeObj)).To(Succeed())
		DeferCleanup(func() { _ = k8sClient.Delete(context.Background(), nodeObj) })
		startAgent()
		DeferCleanup(func() {
			// delete every pod of ours so its sandbox goes, then stop the agent
			pods := &corev1.PodList{}
			Expect(k8sClient.List(context.Background(), pods, client.InNamespace(ns))).To(Succeed())
			for i := range pods.Items {
				_ = k8sClient.Delete(context.Background(), &pods.Items[i], client.GracePeriodSeconds(0))
			}
			Eventually(func() int {
				sbs, _ := rt.ListPodSandbox(context.Background(), &runtimeapi.PodSandboxFilter{LabelSelector: map[string]string{podplan.LabelPodNamespace: ns}})
				return len(sbs)
			}, 30*time.Second, 200*time.Millisecond).Should(BeZero())
			stopAgent()
		})
	})

	create := func(name string, policy corev1.RestartPolicy, mutate func(*corev1.Pod)) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec: corev1.PodSpec{NodeName: node, RestartPolicy: policy, TerminationGracePeriodSeconds: ptr.To(int64(2)),
				Containers: []corev1.Container{{Name: "app", Image: busybox, Command: []string{"sleep", "3600"}}}}}
		if mutate != nil {
			mutate(p)
		}
		Expect(k8sClient.Create(context.Background(), p)).To(Succeed())
		return getPod(p)
	}
	// runningRestarts: the first container's restart count once it runs again (-1 before)
	runningRestarts := func(p *corev1.Pod) func() int32 {
		return func() int32 {
			cs := getPod(p).Status.ContainerStatuses
			if len(cs) == 0 || cs[0].State.Running == nil {
				return -1
			}
			return cs[0].RestartCount
		}
	}
	running := func(uid types.UID, name string) string {
		cs, err := rt.ListContainers(context.Background(), &runtimeapi.ContainerFilter{
			State:         &runtimeapi.ContainerStateValue{State: runtimeapi.ContainerState_CONTAINER_RUNNING},
			LabelSelector: map[string]string{podplan.LabelPodUID: string(uid), podplan.LabelContainerName: name}})
		Expect(err).NotTo(HaveOccurred())
		if len(cs) == 0 {
			return ""
		}
		return cs[0].Id
	}

	It("runs an init container then an httpd that answers on the pod IP", func() {
		p := create("web", corev1.RestartPolicyAlways, func(p *corev1.Pod) {
			p.Spec.InitContainers = []corev1.Container{{Name: "init", Image: busybox, Command: []string{"sh", "-c", "echo init done"}}}
			p.Spec.Containers[0].Command = []string{"sh", "-c", "mkdir -p /www && echo \"hello from $POD_NAME\" > /www/index.html && exec httpd -f -p 8080 -h /www"}
			p.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}}}
		})
		Eventually(phase(p), 60*time.Second, 200*time.Millisecond).Should(Equal(corev1.PodRunning))
		st := getPod(p).Status
		// the pod range of hack/cri-up.sh's containerd (NK_POD_CIDR, default 10.244.0.0/24)
		podNet := netip.MustParsePrefix("10.244.0.0/24")
		if v := os.Getenv("NK_POD_CIDR"); v != "" {
			podNet = netip.MustParsePrefix(v)
		}
		Expect(podNet.Contains(netip.MustParseAddr(st.PodIP))).To(BeTrue(), "pod IP %s outside %s", st.PodIP, podNet)
		Expect(st.InitContainerStatuses[0].State.Terminated).NotTo(BeNil())
		Expect(st.InitContainerStatuses[0].State.Terminated.ExitCode).To(BeZero())
		Expect(st.ContainerStatuses[0].ContainerID).To(HavePrefix("containerd://"))
		Eventually(func() (string, error) { return netnstest.Get(netns, fmt.Sprintf("http://%s:8080/", st.PodIP)) },
			20*time.Second, 200*time.Millisecond).Should(Equal("hello from web\n"))
	})

	It("restarts a container killed from outside, counting the restart", func() {
		p := create("killed", corev1.RestartPolicyAlways, nil)
		Eventually(phase(p), 60*time.Second, 200*time.Millisecond).Should(Equal(corev1.PodRunning))
		id := running(p.UID, "app")
		Expect(id).NotTo(BeEmpty())
		Expect(rt.StopContainer(context.Background(), id, 0)).To(Succeed())
		Eventually(runningRestarts(p), 30*time.Second, 200*time.Millisecond).Should(BeEquivalentTo(1))
		last := getPod(p).Status.ContainerStatuses[0].LastTerminationState.Terminated
		Expect(last).NotTo(BeNil())
		Expect(last.ExitCode).To(BeEquivalentTo(137))
	})

	It("ends restartPolicy Never pods Failed or Succeeded with the exit code", func() {
		failed := create("fails", corev1.RestartPolicyNever, func(p *corev1.Pod) { p.Spec.Containers[0].Command = []string{"sh", "-c", "exit 3"} })
		ok := create("succeeds", corev1.RestartPolicyNever, func(p *corev1.Pod) { p.Spec.Containers[0].Command = []string{"true"} })
		Eventually(phase(failed), 60*time.Second, 200*time.Millisecond).Should(Equal(corev1.PodFailed))
		Eventually(phase(ok), 60*time.Second, 200*time.Millisecond).Should(Equal(corev1.PodSucceeded))
		t := getPod(failed).Status.ContainerStatuses[0].State.Terminated
		Expect(t.ExitCode).To(BeEquivalentTo(3))
		Expect(t.Reason).To(Equal("Error"))
		Expect(getPod(ok).Status.ContainerStatuses[0].State.Terminated.Reason).To(Equal("Completed"))
	})

	It("honours the grace period on deletion, then lets the pod leave the API", func() {
		p := create("stubborn", corev1.RestartPolicyAlways, func(p *corev1.Pod) {
			p.Spec.Containers[0].Command = []string{"sh", "-c", "trap '' TERM; while true; do sleep 1; done"}
		})
		Eventually(phase(p), 60*time.Second, 200*time.Millisecond).Should(Equal(corev1.PodRunning))
		start := time.Now()
		Expect(k8sClient.Delete(context.Background(), p)).To(Succeed())
		Eventually(func() bool {
			return apierrors.IsNotFound(k8sClient.Get(context.Background(), client.ObjectKeyFromObject(p), &corev1.Pod{}))
		}, 30*time.Second, 100*time.Millisecond).Should(BeTrue())
		Expect(time.Since(start)).To(BeNumerically(">=", 2*time.Second), "a process ignoring SIGTERM is killed only after the 2s grace period")
		Expect(running(p.UID, "app")).To(BeEmpty())
		// the sandbox (and its stopped containers, with their logs) goes once the pod has
		// left the API, as the kubelet's
		Eventually(func() ([]*runtimeapi.PodSandbox, error) {
			return rt.ListPodSandbox(context.Background(), &runtimeapi.PodSandboxFilter{LabelSelector: map[string]string{podplan.LabelPodUID: string(p.UID)}})
		}, 10*time.Second, 100*time.Millisecond).Should(BeEmpty())
	})

	It("writes a deleted pod's final status where a finalizer keeps it: 137 for a process ignoring SIGTERM, 0 for one that exits on it", func() {
		stubborn := create("final-137", corev1.RestartPolicyAlways, func(p *corev1.Pod) {
			p.Finalizers = []string{testFinalizer}
			p.Spec.Containers[0].Command = []string{"sh", "-c", "trap '' TERM; while true; do sleep 1; done"}
		})
		DeferCleanup(removeFinalizer, stubborn)
		clean := create("final-0", corev1.RestartPolicyAlways, func(p *corev1.Pod) {
			p.Finalizers = []string{testFinalizer}
			p.Spec.Containers[0].Command = []string{"sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"}
		})
		DeferCleanup(removeFinalizer, clean)
		for _, p := range []*corev1.Pod{stubborn, clean} {
			Eventually(phase(p), 60*time.Second, 200*time.Millisecond).Should(Equal(corev1.PodRunning))
			Expect(k8sClient.Delete(context.Background(), p)).To(Succeed())
		}
		Eventually(phase(stubborn), 30*time.Second, 100*time.Millisecond).Should(Equal(corev1.PodFailed))
		term := getPod(stubborn).Status.ContainerStatuses[0].State.Terminated
		Expect(term).NotTo(BeNil())
		Expect(term.ExitCode).To(Equal(int32(137)))
		Expect(term.ContainerID).To(HavePrefix("containerd://"))
		Eventually(phase(clean), 30*time.Second, 100*time.Millisecond).Should(Equal(corev1.PodSucceeded))
		term = getPod(clean).Status.ContainerStatuses[0].State.Terminated
		Expect(term).NotTo(BeNil())
		Expect(term.ExitCode).To(BeZero())
		Expect(term.Reason).To(Equal("Completed"))
	})

	It("reports an image that does not exist as ErrImagePull", func() {
		p := create("noimage", corev1.RestartPolicyAlways, func(p *corev1.Pod) {
			p.Spec.Containers[0].Image = "127.0.0.1:1/nodekeeper/does-not-exist:v1"
		})
		Eventually(func() string {
			cs := getPod(p).Status.ContainerStatuses
			if len(cs) == 0 || cs[0].State.Waiting == nil {
				return ""
			}
			return cs[0].State.Waiting.Reason
		}, 60*time.Second, 200*time.Millisecond).Should(BeElementOf("ErrImagePull", "ImagePullBackOff"))
		Expect(getPod(p).Status.ContainerStatuses[0].State.Waiting.Message).To(ContainSubstring("does-not-exist"))
	})

	It("runs a static pod from the manifest folder and mirrors it in the API", func() {
		Expect(os.MkdirAll(filepath.Join(root, "manifests"), 0o755)).To(Succeed())
		// sleep as PID 1 ignores SIGTERM: a removed static pod is stopped within its grace period
		manifest := strings.Replace(fmt.Sprintf(staticManifest, ns, "3600"), "spec:\n", "spec:\n  terminationGracePeriodSeconds: 2\n", 1)
		Expect(os.WriteFile(filepath.Join(root, "manifests", "static.yaml"), []byte(manifest), 0o644)).To(Succeed())
		mirror := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "etcdish-" + node}}
		Eventually(func() corev1.PodPhase {
			if err := k8sClient.Get(context.Background(), client.ObjectKeyFromObject(mirror), mirror); err != nil {
				return ""
			}
			return mirror.Status.Phase
		}, 60*time.Second, 200*time.Millisecond).Should(Equal(corev1.PodRunning))
		Expect(mirror.Annotations).To(HaveKey(AnnotationConfigMirror))
		Expect(mirror.Status.ContainerStatuses[0].ContainerID).To(HavePrefix("containerd://"))
		Expect(os.Remove(filepath.Join(root, "manifests", "static.yaml"))).To(Succeed())
		Eventually(func() bool {
			return apierrors.IsNotFound(k8sClient.Get(context.Background(), client.ObjectKeyFromObject(mirror), &corev1.Pod{}))
		}, 30*time.Second, 200*time.Millisecond).Should(BeTrue())
	})

	It("reports the termination message, runs as the asked user, and refuses root under runAsNonRoot", func() {
		msg := create("says-bye", corev1.RestartPolicyNever, func(p *corev1.Pod) {
			p.Spec.Containers[0].Command = []string{"sh", "-c", "echo bye > /dev/termination-log; exit 2"}
			p.Spec.Containers[0].TerminationMessagePath = "/dev/termination-log"
		})
		fallback := create("logs-fallback", corev1.RestartPolicyNever, func(p *corev1.Pod) {
			p.Spec.Containers[0].Command = []string{"sh", "-c", "echo something broke; exit 1"}
			p.Spec.Containers[0].TerminationMessagePath = "/dev/termination-log"
			p.Spec.Containers[0].TerminationMessagePolicy = corev1.TerminationMessageFallbackToLogsOnError
		})
		user := create("as-user", corev1.RestartPolicyAlways, func(p *corev1.Pod) {
			p.Spec.SecurityContext = &corev1.PodSecurityContext{RunAsUser: ptr.To(int64(1000)), RunAsGroup: ptr.To(int64(3000)), SupplementalGroups: []int64{4000}}
		})
		rootRefused := create("no-root", corev1.RestartPolicyAlways, func(p *corev1.Pod) {
			p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{RunAsNonRoot: ptr.To(true)}
		})
		Eventually(phase(msg), 60*time.Second, 200*time.Millisecond).Should(Equal(corev1.PodFailed))
		Expect(getPod(msg).Status.ContainerStatuses[0].State.Terminated.Message).To(Equal("bye\n"))
		Eventually(phase(fallback), 60*time.Second, 200*time.Millisecond).Should(Equal(corev1.PodFailed))
		Expect(getPod(fallback).Status.ContainerStatuses[0].State.Terminated.Message).To(ContainSubstring("something broke"))
		Eventually(phase(user), 60*time.Second, 200*time.Millisecond).Should(Equal(corev1.PodRunning))
		res, err := rt.ExecSync(context.Background(), running(user.UID, "app"), []string{"id"}, 10*time.Second)
		Expect(err).NotTo(HaveOccurred())
		Expect(string(res.Stdout)).To(And(ContainSubstring("uid=1000"), ContainSubstring("gid=3000"), ContainSubstring("4000")))
		Eventually(func() string {
			cs := getPod(rootRefused).Status.ContainerStatuses
			if len(cs) == 0 || cs[0].State.Waiting == nil {
				return ""
			}
			return cs[0].State.Waiting.Reason + ": " + cs[0].State.Waiting.Message
		}, 60*time.Second, 200*time.Millisecond).Should(HavePrefix("CreateContainerConfigError: container has runAsNonRoot and image will run as root"))
	})

	It("mounts a secret that the container reads from tmpfs with its mode", func() {
		Expect(k8sClient.Create(context.Background(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "creds"},
			Data: map[string][]byte{"password": []byte("s3cret")}})).To(Succeed())
		p := create("reads-secret", corev1.RestartPolicyAlways, func(p *corev1.Pod) {
			p.Spec.Volumes = []corev1.Volume{{Name: "creds", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "creds", DefaultMode: ptr.To(int32(0o440))}}}}
			p.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "creds", MountPath: "/etc/creds"}}
		})
		Eventually(phase(p), 60*time.Second, 200*time.Millisecond).Should(Equal(corev1.PodRunning))
		res, err := rt.ExecSync(context.Background(), running(p.UID, "app"), []string{"sh", "-c",
			"cat /etc/creds/password; echo; stat -L -c %a /etc/creds/password; grep ' /etc/creds ' /proc/mounts | cut -d' ' -f3"}, 10*time.Second)
		Expect(err).NotTo(HaveOccurred())
		Expect(string(res.Stdout)).To(Equal("s3cret\n440\ntmpfs\n"))
	})

	It("gives the container the kubelet's /etc/hosts, resolv.conf, fsGroup, OOM score, pod cgroup and postStart hook", func() {
		p := create("managed", corev1.RestartPolicyAlways, func(p *corev1.Pod) {
			p.Spec.HostAliases = []corev1.HostAlias{{IP: "10.1.2.3", Hostnames: []string{"db.local"}}}
			p.Spec.SecurityContext = &corev1.PodSecurityContext{FSGroup: ptr.To(int64(2000))}
			p.Spec.Volumes = []corev1.Volume{{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
			c := &p.Spec.Containers[0]
			c.VolumeMounts = []corev1.VolumeMount{{Name: "scratch", MountPath: "/scratch"}}
			c.Resources = corev1.ResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("64Mi")},
				Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("500m"), corev1.ResourceMemory: resource.MustParse("128Mi")}}
			c.Lifecycle = &corev1.Lifecycle{PostStart: &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: []string{"sh", "-c", "echo hooked > /tmp/poststart"}}}}
		})
		Eventually(phase(p), 60*time.Second, 200*time.Millisecond).Should(Equal(corev1.PodRunning))
		p = getPod(p)
		Expect(p.Status.QOSClass).To(Equal(corev1.PodQOSBurstable))
		run := func(script string) string {
			res, err := rt.ExecSync(context.Background(), running(p.UID, "app"), []string{"sh", "-c", script}, 10*time.Second)
			Expect(err).NotTo(HaveOccurred())
			return string(res.Stdout) + string(res.Stderr)
		}
		Expect(run("cat /etc/hosts")).To(And(HavePrefix("# Kubernetes-managed hosts file.\n"),
			ContainSubstring(p.Status.PodIP+"\tmanaged\n"), HaveSuffix("# Entries added by HostAliases.\n10.1.2.3\tdb.local\n")))
		Expect(run("cat /etc/resolv.conf")).To(And(ContainSubstring("nameserver 10.96.0.10"),
			ContainSubstring("search "+ns+".svc.cluster.local svc.cluster.local cluster.local"), ContainSubstring("options ndots:5")))
		Expect(run("stat -c '%g %A' /scratch; touch /scratch/f; stat -c %g /scratch/f")).To(Equal("2000 drwxrwsrwx\n2000\n"))
		// 1000 - 1000*64Mi/8Gi. runc gives exec'd processes the container spec's score;
		// this sandboxed machine does not let it reach the init process (it keeps 0)
		Expect(run("cat /proc/self/oom_score_adj")).To(Equal("993\n"))
		Expect(run("cat /tmp/poststart")).To(Equal("hooked\n"))
		parent := cgroupRoot + "/kubepods/burstable/pod" + string(p.UID)
		Expect(run("grep memory /proc/1/cgroup")).To(ContainSubstring(":memory:" + parent + "/"))
		cg := func(f string) string {
			b, err := os.ReadFile(filepath.Join("/sys/fs/cgroup", f))
			Expect(err).NotTo(HaveOccurred())
			return string(b)
		}
		Expect(cg("memory" + parent + "/memory.limit_in_bytes")).To(Equal(fmt.Sprint(128<<20) + "\n"))
		Expect(cg("cpu" + parent + "/cpu.cfs_quota_us")).To(Equal("50000\n"))
		Expect(cg("cpu" + parent + "/cpu.shares")).To(Equal("102\n"))

		Expect(k8sClient.Delete(context.Background(), p)).To(Succeed())
		Eventually(func() bool {
			_, err := os.Stat(filepath.Join("/sys/fs/cgroup/memory", parent))
			return os.IsNotExist(err)
		}, 30*time.Second, 200*time.Millisecond).Should(BeTrue(), "the pod's cgroup goes with the pod")
	})

	It("restarts a container whose liveness exec starts failing, and flips an httpd's readiness when its file goes", func() {
		p := create("probed", corev1.RestartPolicyAlways, func(p *corev1.Pod) {
			c := &p.Spec.Containers[0]
			c.Command = []string{"sh", "-c", "mkdir -p /www && echo ok > /www/ready && touch /tmp/alive && exec httpd -f -p 8080 -h /www"}
			// this suite's agent runs outside the pods' network namespace, so the httpd is
			// asked from inside (test/e2e has httpGet probes from the node's namespace)
			c.ReadinessProbe = &corev1.Probe{PeriodSeconds: 1, FailureThreshold: 1,
				ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/ready"}}}}
			c.LivenessProbe = &corev1.Probe{PeriodSeconds: 1, FailureThreshold: 2,
				ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"cat", "/tmp/alive"}}}}
		})
		ready := func() bool {
			cs := getPod(p).Status.ContainerStatuses
			return len(cs) == 1 && cs[0].Ready
		}
		Eventually(ready, 60*time.Second, 200*time.Millisecond).Should(BeTrue())
		Expect(podCondition(getPod(p), corev1.PodReady)).To(Equal(corev1.ConditionTrue))
		run := func(cmd string) {
			_, err := rt.ExecSync(context.Background(), running(p.UID, "app"), []string{"sh", "-c", cmd}, 10*time.Second)
			Expect(err).NotTo(HaveOccurred())
		}
		run("rm /www/ready") // httpd now answers 404
		Eventually(ready, 20*time.Second, 200*time.Millisecond).Should(BeFalse())
		Expect(podCondition(getPod(p), corev1.PodReady)).To(Equal(corev1.ConditionFalse))
		Expect(getPod(p).Status.ContainerStatuses[0].RestartCount).To(BeZero(), "readiness never restarts")
		run("echo ok > /www/ready")
		Eventually(ready, 20*time.Second, 200*time.Millisecond).Should(BeTrue())

		run("rm /tmp/alive") // the liveness exec fails from now on
		Eventually(func() int32 { return getPod(p).Status.ContainerStatuses[0].RestartCount }, 60*time.Second, 200*time.Millisecond).Should(BeNumerically(">=", 1))
		Expect(eventsIn(ns)()).To(ContainElements(ContainSubstring("Unhealthy: Liveness probe failed"),
			"Killing: Container app failed liveness probe, will be restarted"))
	})

	It("shows the container its env, service links, downward API, an updated ConfigMap, a memory emptyDir and its security context", func() {
		ctx := context.Background()
		Expect(k8sClient.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "settings"},
			Data: map[string]string{"mode": "blue", "level": "3"}})).To(Succeed())
		svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "redis-primary"},
			Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "tcp", Port: 6379}}}}
		Expect(k8sClient.Create(ctx, svc)).To(Succeed())
		p := create("observer", corev1.RestartPolicyAlways, func(p *corev1.Pod) {
			p.Labels = map[string]string{"tier": "cache"}
			p.Spec.Volumes = []corev1.Volume{
				{Name: "settings", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "settings"}}}},
				{Name: "info", VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{Items: []corev1.DownwardAPIVolumeFile{
					{Path: "labels", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels"}}}}}},
				{Name: "shm", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory, SizeLimit: ptr.To(resource.MustParse("8Mi"))}}},
			}
			c := &p.Spec.Containers[0]
			c.VolumeMounts = []corev1.VolumeMount{{Name: "settings", MountPath: "/etc/settings"}, {Name: "info", MountPath: "/etc/info"}, {Name: "shm", MountPath: "/shm"}}
			c.Env = []corev1.EnvVar{{Name: "GREETING", Value: "hello $(POD_NAME)"}, {Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
				{Name: "POD_IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}}}
			c.Env[0], c.Env[1] = c.Env[1], c.Env[0] // POD_NAME first so $(POD_NAME) expands
			c.EnvFrom = []corev1.EnvFromSource{{Prefix: "CFG_", ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "settings"}}}}
			c.SecurityContext = &corev1.SecurityContext{ReadOnlyRootFilesystem: ptr.To(true),
				Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}, Add: []corev1.Capability{"NET_BIND_SERVICE"}}}
		})
		Eventually(phase(p), 60*time.Second, 200*time.Millisecond).Should(Equal(corev1.PodRunning))
		p = getPod(p)
		run := func(script string) string {
			res, err := rt.ExecSync(ctx, running(p.UID, "app"), []string{"sh", "-c", script}, 10*time.Second)
			Expect(err).NotTo(HaveOccurred())
			return string(res.Stdout) + string(res.Stderr)
		}
		Expect(run(`echo "$GREETING|$POD_IP|$CFG_mode|$CFG_level"`)).To(Equal("hello observer|" + p.Status.PodIP + "|blue|3\n"))
		Expect(run(`echo "$REDIS_PRIMARY_SERVICE_HOST:$REDIS_PRIMARY_SERVICE_PORT $REDIS_PRIMARY_SERVICE_PORT_TCP $REDIS_PRIMARY_PORT_6379_TCP_ADDR"`)).To(Equal(svc.Spec.ClusterIP + ":6379 6379 " + svc.Spec.ClusterIP + "\n"))
		Expect(run("cat /etc/info/labels")).To(Equal(`tier="cache"`))
		Expect(run("grep ' /shm ' /proc/mounts | cut -d' ' -f3,4 | cut -d, -f1,2")).To(HavePrefix("tmpfs rw,"))
		Expect(run("grep ' /shm ' /proc/mounts")).To(ContainSubstring("size=8192k"))
		Expect(run("touch /rootfs-file 2>&1; echo $?")).To(ContainSubstring("Read-only file system"))
		Expect(run("grep CapEff /proc/self/status")).To(MatchRegexp(`CapEff:\s+0000000000000400\n`), "only NET_BIND_SERVICE (bit 10)")
		Expect(run("cat /etc/settings/mode")).To(Equal("blue"))

		cm := &corev1.ConfigMap{}
		Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "settings"}, cm)).To(Succeed())
		cm.Data["mode"] = "green"
		Expect(k8sClient.Update(ctx, cm)).To(Succeed())
		poked := p.DeepCopy()
		poked.Annotations = map[string]string{"poke": "1"} // a pod event makes the agent look again (else within a minute)
		Expect(k8sClient.Patch(ctx, poked, client.MergeFrom(p))).To(Succeed())
		Eventually(func() string { return run("cat /etc/settings/mode") }, 30*time.Second, 200*time.Millisecond).Should(Equal("green"),
			"the running container sees the update through the ..data swap")
	})

	It("rotates a chatty container's log at containerLogMaxSize and keeps containerLogMaxFiles", func() {
		p := create("chatty", corev1.RestartPolicyAlways, func(p *corev1.Pod) {
			p.Spec.Containers[0].Command = []string{"sh", "-c", "i=0; while :; do i=$((i+1)); echo line $i of a container that talks a lot; usleep 200; done"}
		})
		Eventually(phase(p), 60*time.Second, 200*time.Millisecond).Should(Equal(corev1.PodRunning))
		p = getPod(p)
		dir := filepath.Join(root, "logs", ns+"_chatty_"+string(p.UID), "app")
		files := func() []string {
			m, _ := filepath.Glob(filepath.Join(dir, "0.log*"))
			// a rotated file counts once while it is compressed (<f>.tmp, then <f>.gz beside <f>)
			seen := map[string]bool{}
			var out []string
			for _, f := range m {
				if f = strings.TrimSuffix(f, ".gz"); !strings.HasSuffix(f, ".tmp") && !seen[f] {
					seen[f] = true
					out = append(out, f)
				}
			}
			return out
		}
		Eventually(func() int { return len(files()) }, 30*time.Second, 200*time.Millisecond).Should(Equal(3), "current + 2 rotated")
		Consistently(func() int { return len(files()) }, 3*time.Second, 100*time.Millisecond).Should(BeNumerically("<=", 3))
		// as upstream, the older rotated file is gzipped (the newest stays as it is)
		Eventually(func() []string {
			m, _ := filepath.Glob(filepath.Join(dir, "0.log.*.gz"))
			return m
		}, 10*time.Second, 100*time.Millisecond).ShouldNot(BeEmpty())
		// the runtime writes to the reopened file, which stays near the limit
		Eventually(func() int64 {
			fi, err := os.Stat(filepath.Join(dir, "0.log"))
			if err != nil {
				return -1
			}
			return fi.Size()
		}, 10*time.Second, 100*time.Millisecond).Should(And(BeNumerically(">", 0), BeNumerically("<", 4<<20)))
		Expect(running(p.UID, "app")).NotTo(BeEmpty())
	})

	It("reports a container killed by the OOM killer as OOMKilled", func() {
		p := create("hog", corev1.RestartPolicyNever, func(p *corev1.Pod) {
			p.Spec.Containers[0].Command = []string{"sh", "-c", "sleep 1; tail /dev/zero"} // tail buffers an endless line
			p.Spec.Containers[0].Resources.Limits = corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("24Mi")}
		})
		Eventually(phase(p), 60*time.Second, 200*time.Millisecond).Should(Equal(corev1.PodFailed))
		t := getPod(p).Status.ContainerStatuses[0].State.Terminated
		Expect(t).NotTo(BeNil())
		Expect(t.Reason).To(Equal("OOMKilled"))
		Expect(t.ExitCode).To(BeEquivalentTo(137))
	})

	It("adopts running containers after an agent restart without restarting them", func() {
		p := create("adopted", corev1.RestartPolicyAlways, nil)
		Eventually(phase(p), 60*time.Second, 200*time.Millisecond).Should(Equal(corev1.PodRunning))
		before := running(p.UID, "app")
		stopAgent()
		startAgent()
		Consistently(func() string { return running(p.UID, "app") }, 3*time.Second, 200*time.Millisecond).Should(Equal(before))
		Expect(getPod(p).Status.ContainerStatuses[0].RestartCount).To(BeZero())
	})

	It("takes a container's exit from the runtime's event stream (containerd 2.x), not only from relisting", func() {
		v, err := rt.Version(context.Background())
		Expect(err).NotTo(HaveOccurred())
		if strings.HasPrefix(v.GetRuntimeVersion(), "1.") {
			Skip("containerd " + v.GetRuntimeVersion() + " has no GetContainerEvents: relisting only")
		}
		// relisting once an hour: only the event stream can tell the agent in time
		stopAgent()
		relistPeriod = time.Hour
		startAgent()
		DeferCleanup(func() { stopAgent(); relistPeriod = 200 * time.Millisecond; startAgent() })
		p := create("evented", corev1.RestartPolicyAlways, nil)
		Eventually(phase(p), 60*time.Second, 200*time.Millisecond).Should(Equal(corev1.PodRunning))
		id := running(p.UID, "app")
		Expect(id).NotTo(BeEmpty())
		Expect(rt.StopContainer(context.Background(), id, 0)).To(Succeed())
		Eventually(runningRestarts(p), 30*time.Second, 200*time.Millisecond).Should(BeEquivalentTo(1))
		Expect(gauge("kubelet_evented_pleg_connection_success_count")).To(BeNumerically(">=", 1))
	})

	It("runs a privileged container, applies the pod's sysctls, masks /proc as upstream and cuts a long pod name to a hostname", func() {
		name := "long-" + strings.Repeat("x", 57) + "-tail" // 67 characters: cut at 63 ends with '-'
		p := create(name, corev1.RestartPolicyAlways, func(p *corev1.Pod) {
			p.Spec.SecurityContext = &corev1.PodSecurityContext{Sysctls: []corev1.Sysctl{{Name: "kernel.shm_rmid_forced", Value: "1"}}}
			p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "priv", Image: busybox, Command: []string{"sleep", "3600"},
				SecurityContext: &corev1.SecurityContext{Privileged: ptr.To(true)}})
		})
		Eventually(phase(p), 60*time.Second, 200*time.Millisecond).Should(Equal(corev1.PodRunning))
		p = getPod(p)
		run := func(container, script string) string {
			res, err := rt.ExecSync(context.Background(), running(p.UID, container), []string{"sh", "-c", script}, 10*time.Second)
			Expect(err).NotTo(HaveOccurred())
			return string(res.Stdout) + string(res.Stderr)
		}
		Expect(run("app", "hostname")).To(Equal(name[:62] + "\n"))
		Expect(run("app", "cat /proc/sys/kernel/shm_rmid_forced")).To(Equal("1\n"))
		// masked: /dev/null is bound over /proc/interrupts (in upstream's list, not in
		// containerd's own defaults: the kubelet's list reached runc); /proc/sys is read-only
		Expect(run("app", "wc -c < /proc/interrupts; grep ' /proc/sys ' /proc/mounts | cut -d' ' -f4 | cut -d, -f1")).To(Equal("0\nro\n"))
		// each container has its own PID namespace: its command is PID 1
		Expect(run("app", "cat /proc/1/cmdline | tr '\\0' ' '")).To(Equal("sleep 3600 "))
		// privileged: not masked, and may do what only privileged containers may
		Expect(run("priv", "[ $(wc -c < /proc/interrupts) -gt 0 ] && echo unmasked; mkdir -p /tmp/m && mount -t tmpfs none /tmp/m && echo mounted")).
			To(Equal("unmasked\nmounted\n"))
	})

	It("keeps a pod whose FQDN is too long for the kernel Pending with the kubelet's event", func() {
		p := create("hostfqdnveryveryveryverylongforfqdntobemorethan64bytes", corev1.RestartPolicyAlways, func(p *corev1.Pod) {
			p.Spec.Subdomain = "t"
			p.Spec.SetHostnameAsFQDN = ptr.To(true)
		})
		Eventually(eventsIn(ns), 30*time.Second, 200*time.Millisecond).Should(ContainElement(HavePrefix(
			"FailedCreatePodSandBox: Failed to create pod sandbox: failed to construct FQDN from pod hostname and cluster domain, FQDN " + p.Name + ".t.")))
		Expect(getPod(p).Status.Phase).To(Equal(corev1.PodPending))
	})
})
