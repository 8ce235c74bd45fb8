package controllers

import (
	"context"
	"errors"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/nodekeeper/nodekeeper/api/v1alpha1"
	"github.com/nodekeeper/nodekeeper/internal/devicemanager"
	"github.com/nodekeeper/nodekeeper/runtime/cri/fake"
)

// fakeDevices hands out one device per request of example.com/dev, up to free.
type fakeDevices struct {
	mu       sync.Mutex
	free     int
	got      map[string]bool // podUID/container
	released []string
}

func (f *fakeDevices) Allocate(_ context.Context, uid, c string, limits corev1.ResourceList) (*devicemanager.ContainerDevices, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := limits["example.com/dev"]; !ok {
		return nil, nil
	}
	if !f.got[uid+"/"+c] {
		if f.free == 0 {
			return nil, errors.New("requested number of devices unavailable for example.com/dev. Requested: 1, Available: 0")
		}
		f.free--
		f.got[uid+"/"+c] = true
	}
	return &devicemanager.ContainerDevices{Envs: map[string]string{"DEV": "d0"},
		Mounts:      []*pluginapi.Mount{{ContainerPath: "/dev-state", HostPath: "/tmp/dev-state"}},
		Devices:     []*pluginapi.DeviceSpec{{ContainerPath: "/dev/d0", HostPath: "/dev/null", Permissions: "rw"}},
		Annotations: map[string]string{"example.com/dev": "d0"}}, nil
}

func (f *fakeDevices) PreStart(context.Context, string, string) error { return nil }

func (f *fakeDevices) Release(uid string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.released = append(f.released, uid)
}

var _ = Describe("Device plugin resources (fake runtime, fake device manager)", func() {
	It("gives a container its devices, and rejects a pod whose devices cannot be allocated", func() {
		node, ns := "dev-"+rand.String(5), "dev-"+rand.String(5)
		Expect(k8sClient.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})).To(Succeed())
		rt := fake.New()
		rt.LoadImage(busybox, 1<<20)
		devs := &fakeDevices{free: 1, got: map[string]bool{}}
		cfg := &v1alpha1.AgentConfiguration{NodeName: node, RootDir: GinkgoT().TempDir()}
		v1alpha1.SetDefaults(cfg)
		startManager(func(mgr ctrl.Manager) error {
			return (&PodReconciler{Client: mgr.GetClient(), Runtime: rt, Recorder: mgr.GetEventRecorderFor("kubelet"), Config: cfg,
				HostIP: "192.0.2.10", RelistPeriod: 100 * time.Millisecond, Devices: devs}).SetupWithManager(mgr)
		})
		a := &podAgent{node: node, ns: ns, runtime: rt}
		withDevice := func(p *corev1.Pod) {
			rl := corev1.ResourceList{"example.com/dev": *resource.NewQuantity(1, resource.DecimalSI)}
			p.Spec.Containers[0].Resources = corev1.ResourceRequirements{Requests: rl, Limits: rl}
		}
		p := a.pod("with-device", corev1.RestartPolicyAlways, withDevice)
		Eventually(phase(p), 10*time.Second, 50*time.Millisecond).Should(Equal(corev1.PodRunning))
		id := a.running(getPod(p).UID, "app")
		cc := rt.ContainerConfig(id)
		var env []string
		for _, kv := range cc.Envs {
			env = append(env, kv.Key+"="+string(kv.Value))
		}
		Expect(env).To(ContainElement("DEV=d0"))
		Expect(cc.Devices).To(HaveLen(1))
		Expect(cc.Devices[0].ContainerPath).To(Equal("/dev/d0"))
		Expect(cc.Annotations).To(HaveKeyWithValue("example.com/dev", "d0"))
		var mounts []string
		for _, m := range cc.Mounts {
			mounts = append(mounts, m.ContainerPath)
		}
		Expect(mounts).To(ContainElement("/dev-state"))

		// no device left: the kubelet's admission rejects the second pod
		q := a.pod("no-device-left", corev1.RestartPolicyAlways, withDevice)
		Eventually(phase(q), 10*time.Second, 50*time.Millisecond).Should(Equal(corev1.PodFailed))
		st := getPod(q).Status
		Expect(st.Reason).To(Equal("UnexpectedAdmissionError"))
		Expect(st.Message).To(Equal("Pod was rejected: Allocate failed due to requested number of devices unavailable for example.com/dev. Requested: 1, Available: 0, which is unexpected"))
		Expect(a.containers(getPod(q).UID, "app")).To(BeEmpty())
	})
})
