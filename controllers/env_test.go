package controllers

import (
	"context"
	"os"
	"path/filepath"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/utils/ptr"

	"github.com/nodekeeper/nodekeeper/api/v1alpha1"
)

var _ = Describe("Container environment", func() {
	It("resolves service links, envFrom, configMap/secret/field/resource refs and $(VAR) as the kubelet does", func() {
		ctx := context.Background()
		ns := "env-" + rand.String(5)
		Expect(k8sClient.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})).To(Succeed())
		Expect(k8sClient.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "cfg"},
			Data: map[string]string{"mode": "fast", "level": "3", "bad-key": "x"}})).To(Succeed())
		Expect(k8sClient.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "sec"},
			Data: map[string][]byte{"password": []byte("s3cret")}})).To(Succeed())
		svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "my-db"},
			Spec: corev1.ServiceSpec{ClusterIP: clusterIP(), Ports: []corev1.ServicePort{
				{Name: "sql", Port: 5432, Protocol: corev1.ProtocolTCP}, {Name: "metrics", Port: 9187, Protocol: corev1.ProtocolUDP}}}}
		Expect(k8sClient.Create(ctx, svc)).To(Succeed())
		DeferCleanup(func() { _ = k8sClient.Delete(context.Background(), svc) })
		kube := &corev1.Service{}
		Expect(k8sClient.Get(ctx, nsName("default", "kubernetes"), kube)).To(Succeed())

		cfg := &v1alpha1.AgentConfiguration{NodeName: "n1"}
		v1alpha1.SetDefaults(cfg)
		r := &PodReconciler{Client: k8sClient, Config: cfg, HostIP: "192.0.2.10"}
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "p", UID: "u-1"},
			Spec: corev1.PodSpec{NodeName: "n1"}, Status: corev1.PodStatus{PodIP: "10.244.0.9"}}
		c := corev1.Container{Name: "app",
			Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{"memory": resource.MustParse("64Mi"), "cpu": resource.MustParse("250m")}},
			EnvFrom: []corev1.EnvFromSource{
				{Prefix: "CFG_", ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}}},
				{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "absent"}, Optional: ptr.To(true)}},
			},
			Env: []corev1.EnvVar{
				{Name: "PASSWORD", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "sec"}, Key: "password"}}},
				{Name: "MODE", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}, Key: "mode"}}},
				{Name: "NOPE", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}, Key: "nope", Optional: ptr.To(true)}}},
				{Name: "MEM_MI", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "limits.memory", Divisor: resource.MustParse("1Mi")}}},
				{Name: "CPU_M", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "limits.cpu", Divisor: resource.MustParse("1m")}}},
				{Name: "POD_IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}},
				{Name: "NODE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.nodeName"}}},
				{Name: "URL", Value: "postgres://$(MY_DB_SERVICE_HOST):$(MY_DB_SERVICE_PORT)/$(MODE)?x=$$(MODE)&y=$(UNDEFINED)"},
			}}
		pod.Spec.Containers = []corev1.Container{c}
		kvs, err := r.env(ctx, pod, &pod.Spec.Containers[0])
		Expect(err).NotTo(HaveOccurred())
		got := map[string]string{}
		for _, kv := range kvs {
			got[kv.Key] = string(kv.Value)
		}
		ip := svc.Spec.ClusterIP
		Expect(got).To(HaveKeyWithValue("MY_DB_SERVICE_HOST", ip))
		Expect(got).To(HaveKeyWithValue("MY_DB_SERVICE_PORT", "5432"))
		Expect(got).To(HaveKeyWithValue("MY_DB_SERVICE_PORT_SQL", "5432"))
		Expect(got).To(HaveKeyWithValue("MY_DB_SERVICE_PORT_METRICS", "9187"))
		Expect(got).To(HaveKeyWithValue("MY_DB_PORT", "tcp://"+ip+":5432"))
		Expect(got).To(HaveKeyWithValue("MY_DB_PORT_5432_TCP", "tcp://"+ip+":5432"))
		Expect(got).To(HaveKeyWithValue("MY_DB_PORT_5432_TCP_PROTO", "tcp"))
		Expect(got).To(HaveKeyWithValue("MY_DB_PORT_5432_TCP_PORT", "5432"))
		Expect(got).To(HaveKeyWithValue("MY_DB_PORT_5432_TCP_ADDR", ip))
		Expect(got).To(HaveKeyWithValue("MY_DB_PORT_9187_UDP", "udp://"+ip+":9187"))
		Expect(got).To(HaveKeyWithValue("KUBERNETES_SERVICE_HOST", kube.Spec.ClusterIP))
		Expect(got).To(HaveKeyWithValue("KUBERNETES_SERVICE_PORT", "443"))
		Expect(got).To(HaveKeyWithValue("KUBERNETES_SERVICE_PORT_HTTPS", "443"))
		Expect(got).To(HaveKeyWithValue("CFG_mode", "fast"))
		Expect(got).To(HaveKeyWithValue("CFG_level", "3"))
		Expect(got).To(HaveKeyWithValue("CFG_bad-key", "x")) // env names are relaxed upstream (any printable but =)
		Expect(got).To(HaveKeyWithValue("PASSWORD", "s3cret"))
		Expect(got).To(HaveKeyWithValue("MODE", "fast"))
		Expect(got).NotTo(HaveKey("NOPE"))
		Expect(got).To(HaveKeyWithValue("MEM_MI", "64"))
		Expect(got).To(HaveKeyWithValue("CPU_M", "250"))
		Expect(got).To(HaveKeyWithValue("POD_IP", "10.244.0.9"))
		Expect(got).To(HaveKeyWithValue("NODE", "n1"))
		Expect(got).To(HaveKeyWithValue("URL", "postgres://"+ip+":5432/fast?x=$(MODE)&y=$(UNDEFINED)"))

		// enableServiceLinks: false keeps only the master service
		pod.Spec.EnableServiceLinks = ptr.To(false)
		kvs, err = r.env(ctx, pod, &pod.Spec.Containers[0])
		Expect(err).NotTo(HaveOccurred())
		got = map[string]string{}
		for _, kv := range kvs {
			got[kv.Key] = string(kv.Value)
		}
		Expect(got).NotTo(HaveKey("MY_DB_SERVICE_HOST"))
		Expect(got).To(HaveKey("KUBERNETES_SERVICE_HOST"))

		// fileKeyRef (EnvFiles): a key of an env file in one of the pod's volumes
		cfg.RootDir = GinkgoT().TempDir()
		pod.Spec.Volumes = []corev1.Volume{{Name: "config", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
		Expect(os.MkdirAll(r.volumeDir(pod, "config"), 0o755)).To(Succeed())
		Expect(os.WriteFile(filepath.Join(r.volumeDir(pod, "config"), "config.env"), []byte("CONFIG_1='value1'\n"), 0o644)).To(Succeed())
		fileRef := func(key string, optional bool) corev1.EnvVar {
			return corev1.EnvVar{Name: key, ValueFrom: &corev1.EnvVarSource{FileKeyRef: &corev1.FileKeySelector{
				VolumeName: "config", Path: "config.env", Key: key, Optional: ptr.To(optional)}}}
		}
		pod.Spec.Containers[0].Env = []corev1.EnvVar{fileRef("CONFIG_1", false), fileRef("CONFIG_2", true)}
		kvs, err = r.env(ctx, pod, &pod.Spec.Containers[0])
		Expect(err).NotTo(HaveOccurred())
		got = map[string]string{}
		for _, kv := range kvs {
			got[kv.Key] = string(kv.Value)
		}
		Expect(got).To(HaveKeyWithValue("CONFIG_1", "value1"))
		Expect(got).NotTo(HaveKey("CONFIG_2"))
		pod.Spec.Containers[0].Env = []corev1.EnvVar{fileRef("CONFIG_2", false)}
		_, err = r.env(ctx, pod, &pod.Spec.Containers[0])
		Expect(err).To(MatchError(`environment variable key "CONFIG_2" not found in file "config.env"`))
	})

	It("gives the node's allocatable for limits a container does not set, in env and in downwardAPI volumes", func() {
		ctx := context.Background()
		ns := "env-" + rand.String(5)
		Expect(k8sClient.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})).To(Succeed())
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "alloc-" + rand.String(5)}}
		Expect(k8sClient.Create(ctx, node)).To(Succeed())
		DeferCleanup(func() { _ = k8sClient.Delete(context.Background(), node) })
		node.Status.Allocatable = corev1.ResourceList{"cpu": resource.MustParse("3"), "memory": resource.MustParse("6Gi"),
			"ephemeral-storage": resource.MustParse("40Gi"), "pods": resource.MustParse("110")}
		Expect(k8sClient.Status().Update(ctx, node)).To(Succeed())

		cfg := &v1alpha1.AgentConfiguration{NodeName: node.Name}
		v1alpha1.SetDefaults(cfg)
		r := &PodReconciler{Client: k8sClient, Config: cfg, HostIP: "192.0.2.10"}
		ref := func(res, div, container string) *corev1.ResourceFieldSelector {
			return &corev1.ResourceFieldSelector{Resource: res, Divisor: resource.MustParse(div), ContainerName: container}
		}
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "p", UID: "u-2"},
			Spec: corev1.PodSpec{NodeName: node.Name, Containers: []corev1.Container{
				{Name: "nolimits", Env: []corev1.EnvVar{
					{Name: "CPU_LIMIT", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: ref("limits.cpu", "1", "")}},
					{Name: "MEMORY_LIMIT_MI", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: ref("limits.memory", "1Mi", "")}},
					{Name: "CPU_REQUEST", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: ref("requests.cpu", "1m", "")}},
					{Name: "OTHER_MEMORY_LIMIT", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: ref("limits.memory", "1Mi", "limited")}},
				}},
				{Name: "limited", Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{"memory": resource.MustParse("64Mi")}}},
			}}}
		kvs, err := r.env(ctx, pod, &pod.Spec.Containers[0])
		Expect(err).NotTo(HaveOccurred())
		got := map[string]string{}
		for _, kv := range kvs {
			got[kv.Key] = string(kv.Value)
		}
		Expect(got).To(HaveKeyWithValue("CPU_LIMIT", "3"))
		Expect(got).To(HaveKeyWithValue("MEMORY_LIMIT_MI", "6144"))
		Expect(got).To(HaveKeyWithValue("CPU_REQUEST", "0"))
		Expect(got).To(HaveKeyWithValue("OTHER_MEMORY_LIMIT", "64"))

		vol := &corev1.Volume{Name: "info", VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{Items: []corev1.DownwardAPIVolumeFile{
			{Path: "cpu_limit", ResourceFieldRef: ref("limits.cpu", "1m", "nolimits")},
			{Path: "memory_limit", ResourceFieldRef: ref("limits.memory", "1", "nolimits")},
			{Path: "storage_limit", ResourceFieldRef: ref("limits.ephemeral-storage", "1Gi", "nolimits")},
			{Path: "limited_memory", ResourceFieldRef: ref("limits.memory", "1Mi", "limited")},
		}}}}
		files, _, err := r.volumes().Files(pod, vol, r.volumeSources(ctx, pod))
		Expect(err).NotTo(HaveOccurred())
		contents := map[string]string{}
		for k, f := range files {
			contents[k] = string(f.Data)
		}
		Expect(contents).To(Equal(map[string]string{"cpu_limit": "3000", "memory_limit": "6442450944", "storage_limit": "40", "limited_memory": "64"}))
	})

	It("holds a container in CreateContainerConfigError naming the missing object, and starts it once it appears", func() {
		a := newPodAgent()
		p := a.pod("needs-cfg", corev1.RestartPolicyAlways, func(p *corev1.Pod) {
			p.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "X", ValueFrom: &corev1.EnvVarSource{
				ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "late"}, Key: "k"}}}}
		})
		waiting := func() *corev1.ContainerStateWaiting {
			cs := getPod(p).Status.ContainerStatuses
			if len(cs) == 0 {
				return nil
			}
			return cs[0].State.Waiting
		}
		Eventually(func() string {
			if w := waiting(); w != nil {
				return w.Reason + ": " + w.Message
			}
			return ""
		}, 10*time.Second, 50*time.Millisecond).Should(Equal(`CreateContainerConfigError: configmap "late" not found`))
		Expect(k8sClient.Create(context.Background(), &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: a.ns, Name: "late"},
			Data: map[string]string{"k": "v"}})).To(Succeed())
		Eventually(phase(p), 20*time.Second, 100*time.Millisecond).Should(Equal(corev1.PodRunning))
	})
})

func nsName(ns, name string) types.NamespacedName {
	return types.NamespacedName{Namespace: ns, Name: name}
}
