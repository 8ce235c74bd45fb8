package podconfig

import (
	"errors"
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/utils/ptr"
)

// objects is an in-memory namespace; it counts reads, and answers the failing name
// with an API server error.
type objects struct {
	configMaps map[string]map[string]string
	secrets    map[string]map[string][]byte
	failing    string
	reads      map[string]int
}

func (o *objects) ConfigMap(name string) (*corev1.ConfigMap, error) {
	d, err := get(o, "configmaps", name, o.configMaps)
	return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}, Data: d}, err
}

func (o *objects) Secret(name string) (*corev1.Secret, error) {
	d, err := get(o, "secrets", name, o.secrets)
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name}, Data: d}, err
}

func get[V any](o *objects, resource, name string, objs map[string]V) (V, error) {
	if o.reads == nil {
		o.reads = map[string]int{}
	}
	o.reads[resource+"/"+name]++
	var none V
	if name == o.failing {
		return none, apierrors.NewInternalError(errors.New("etcd is down"))
	}
	d, ok := objs[name]
	if !ok {
		return none, apierrors.NewNotFound(schema.GroupResource{Resource: resource}, name)
	}
	return d, nil
}

func cmRef(name string, optional bool) *corev1.ConfigMapEnvSource {
	return &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: name}, Optional: ptr.To(optional)}
}

func secRef(name string, optional bool) *corev1.SecretEnvSource {
	return &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: name}, Optional: ptr.To(optional)}
}

func cmKey(name, key string, optional bool) *corev1.EnvVarSource {
	return &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{
		LocalObjectReference: corev1.LocalObjectReference{Name: name}, Key: key, Optional: ptr.To(optional)}}
}

func secKey(name, key string, optional bool) *corev1.EnvVarSource {
	return &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
		LocalObjectReference: corev1.LocalObjectReference{Name: name}, Key: key, Optional: ptr.To(optional)}}
}

func field(path string) *corev1.EnvVarSource {
	return &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: path}}
}

func res(name, divisor string) *corev1.EnvVarSource {
	return &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: name, Divisor: resource.MustParse(divisor)}}
}

func fileKey(volume, path, key string, optional bool) *corev1.EnvVarSource {
	return &corev1.EnvVarSource{FileKeyRef: &corev1.FileKeySelector{VolumeName: volume, Path: path, Key: key, Optional: ptr.To(optional)}}
}

func kv(pairs ...string) []*runtimeapi.KeyValue {
	var out []*runtimeapi.KeyValue
	for i := 0; i < len(pairs); i += 2 {
		out = append(out, &runtimeapi.KeyValue{Key: pairs[i], Value: []byte(pairs[i+1])})
	}
	return out
}

// Env resolves a container's environment as the kubelet's makeEnvironmentVariables;
// each case gives the whole environment, in order, or the error.
func TestEnv(t *testing.T) {
	svcEnv := []corev1.EnvVar{{Name: "DB_SERVICE_HOST", Value: "10.96.0.7"}, {Name: "DB_SERVICE_PORT", Value: "5432"}}
	files := map[string]string{"config/app.env": "A='one'\nB='two'\n", "config/broken.env": "A='unterminated\n", "/srv/host.env": "H='host'\n"}
	cases := []struct {
		name     string
		c        corev1.Container
		volumes  []corev1.Volume
		want     []*runtimeapi.KeyValue
		err      string // the error's text; "" for none
		config   bool   // the error is a ConfigError
		services bool   // the pod gets svcEnv
	}{
		{name: "nothing", want: []*runtimeapi.KeyValue{}},
		{name: "service links come first", services: true,
			c:    corev1.Container{Env: []corev1.EnvVar{{Name: "X", Value: "1"}}},
			want: kv("DB_SERVICE_HOST", "10.96.0.7", "DB_SERVICE_PORT", "5432", "X", "1")},
		{name: "env replaces a service variable in place", services: true,
			c:    corev1.Container{Env: []corev1.EnvVar{{Name: "DB_SERVICE_HOST", Value: "db.local"}}},
			want: kv("DB_SERVICE_HOST", "db.local", "DB_SERVICE_PORT", "5432")},
		{name: "envFrom: sorted keys, prefix, in order of the sources, env last and winning",
			c: corev1.Container{EnvFrom: []corev1.EnvFromSource{{ConfigMapRef: cmRef("cfg", false), Prefix: "CFG_"}, {SecretRef: secRef("sec", false)}},
				Env: []corev1.EnvVar{{Name: "password", Value: "override"}, {Name: "Z", Value: "z"}}},
			want: kv("CFG_level", "3", "CFG_mode", "fast", "password", "override", "user", "bob", "Z", "z")},
		{name: "envFrom: a later source replaces an earlier key",
			c:    corev1.Container{EnvFrom: []corev1.EnvFromSource{{ConfigMapRef: cmRef("cfg", false)}, {ConfigMapRef: cmRef("other", false)}}},
			want: kv("level", "4", "mode", "fast", "extra", "e")},
		{name: "envFrom: invalid names skipped",
			c:    corev1.Container{EnvFrom: []corev1.EnvFromSource{{ConfigMapRef: cmRef("odd", false)}}},
			want: kv("dotted.name", "d", "ok-name", "o")},
		{name: "envFrom: a prefix can make a name valid",
			c:    corev1.Container{EnvFrom: []corev1.EnvFromSource{{ConfigMapRef: cmRef("odd", false), Prefix: "P_"}}},
			want: kv("P_1digit", "1", "P_dotted.name", "d", "P_ok-name", "o")},
		{name: "envFrom: optional missing sources skipped",
			c:    corev1.Container{EnvFrom: []corev1.EnvFromSource{{ConfigMapRef: cmRef("absent", true)}, {SecretRef: secRef("absent", true)}}},
			want: []*runtimeapi.KeyValue{}},
		{name: "envFrom: missing ConfigMap",
			c:   corev1.Container{EnvFrom: []corev1.EnvFromSource{{ConfigMapRef: cmRef("absent", false)}}},
			err: `configmap "absent" not found`, config: true},
		{name: "envFrom: missing Secret",
			c:   corev1.Container{EnvFrom: []corev1.EnvFromSource{{SecretRef: secRef("absent", false)}}},
			err: `secret "absent" not found`, config: true},
		{name: "envFrom: an API error is no config error, even for an optional source",
			c:   corev1.Container{EnvFrom: []corev1.EnvFromSource{{ConfigMapRef: cmRef("failing", true)}}},
			err: "Internal error occurred: etcd is down"},
		{name: "$(VAR) against what is defined before, services and envFrom included", services: true,
			c: corev1.Container{EnvFrom: []corev1.EnvFromSource{{ConfigMapRef: cmRef("cfg", false)}},
				Env: []corev1.EnvVar{{Name: "URL", Value: "pg://$(DB_SERVICE_HOST):$(DB_SERVICE_PORT)/$(mode)?l=$(LATER)&x=$$(mode)"}, {Name: "LATER", Value: "late"},
					{Name: "AGAIN", Value: "$(LATER)"}}},
			want: kv("DB_SERVICE_HOST", "10.96.0.7", "DB_SERVICE_PORT", "5432", "level", "3", "mode", "fast",
				"URL", "pg://10.96.0.7:5432/fast?l=$(LATER)&x=$(mode)", "LATER", "late", "AGAIN", "late")},
		{name: "a redefined name keeps its first place",
			c:    corev1.Container{Env: []corev1.EnvVar{{Name: "A", Value: "1"}, {Name: "B", Value: "$(A)"}, {Name: "A", Value: "2"}}},
			want: kv("A", "2", "B", "1")},
		{name: "ConfigMap and Secret keys",
			c: corev1.Container{Env: []corev1.EnvVar{{Name: "MODE", ValueFrom: cmKey("cfg", "mode", false)},
				{Name: "PW", ValueFrom: secKey("sec", "password", false)}}},
			want: kv("MODE", "fast", "PW", "s3cret")},
		{name: "optional keys and objects that are missing are left out",
			c: corev1.Container{Env: []corev1.EnvVar{{Name: "A", ValueFrom: cmKey("cfg", "nope", true)}, {Name: "B", ValueFrom: cmKey("absent", "k", true)},
				{Name: "C", ValueFrom: secKey("sec", "nope", true)}, {Name: "D", ValueFrom: secKey("absent", "k", true)}}},
			want: []*runtimeapi.KeyValue{}},
		{name: "missing ConfigMap key",
			c:   corev1.Container{Env: []corev1.EnvVar{{Name: "A", ValueFrom: cmKey("cfg", "nope", false)}}},
			err: "couldn't find key nope in ConfigMap ns/cfg", config: true},
		{name: "missing Secret key",
			c:   corev1.Container{Env: []corev1.EnvVar{{Name: "A", ValueFrom: secKey("sec", "nope", false)}}},
			err: "couldn't find key nope in Secret ns/sec", config: true},
		{name: "missing Secret of a key ref",
			c:   corev1.Container{Env: []corev1.EnvVar{{Name: "A", ValueFrom: secKey("absent", "k", false)}}},
			err: `secret "absent" not found`, config: true},
		{name: "an API error reading a key ref",
			c:   corev1.Container{Env: []corev1.EnvVar{{Name: "A", ValueFrom: secKey("failing", "k", true)}}},
			err: "Internal error occurred: etcd is down"},
		{name: "field refs",
			c: corev1.Container{Env: []corev1.EnvVar{{Name: "NAME", ValueFrom: field("metadata.name")}, {Name: "IP", ValueFrom: field("status.podIP")},
				{Name: "HOST", ValueFrom: field("status.hostIP")}, {Name: "APP", ValueFrom: field("metadata.labels['app']")},
				{Name: "ECHO", Value: "$(NAME)@$(HOST)"}}},
			want: kv("NAME", "p", "IP", "10.244.0.9", "HOST", "192.0.2.10", "APP", "web", "ECHO", "p@192.0.2.10")},
		{name: "an unsupported field path",
			c:   corev1.Container{Env: []corev1.EnvVar{{Name: "X", ValueFrom: field("spec.schedulerName")}}},
			err: `env X: unsupported fieldPath "spec.schedulerName"`, config: true},
		{name: "resource refs: the container's limit, else the node's allocatable",
			c: corev1.Container{Name: "app", Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{"memory": resource.MustParse("64Mi")},
				Requests: corev1.ResourceList{"cpu": resource.MustParse("250m")}},
				Env: []corev1.EnvVar{{Name: "MEM", ValueFrom: res("limits.memory", "1Mi")}, {Name: "CPU", ValueFrom: res("limits.cpu", "1")},
					{Name: "REQ", ValueFrom: res("requests.cpu", "1m")}}},
			want: kv("MEM", "64", "CPU", "3", "REQ", "250")},
		{name: "an unsupported resource",
			c:   corev1.Container{Name: "app", Env: []corev1.EnvVar{{Name: "X", ValueFrom: res("limits.pods", "1")}}},
			err: "env X: unsupported container resource : limits.pods", config: true},
		{name: "env file keys, from an emptyDir and a hostPath volume",
			volumes: []corev1.Volume{{Name: "config", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
				{Name: "host", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/srv"}}}},
			c: corev1.Container{Env: []corev1.EnvVar{{Name: "B", ValueFrom: fileKey("config", "app.env", "B", false)},
				{Name: "UP", ValueFrom: fileKey("config", "../../app.env", "A", false)}, // kept inside the volume
				{Name: "H", ValueFrom: fileKey("host", "host.env", "H", false)}, {Name: "C", ValueFrom: fileKey("config", "app.env", "C", true)}}},
			want: kv("B", "two", "UP", "one", "H", "host")},
		{name: "env file: a missing key",
			volumes: []corev1.Volume{{Name: "config"}},
			c:       corev1.Container{Env: []corev1.EnvVar{{Name: "C", ValueFrom: fileKey("config", "app.env", "C", false)}}},
			err:     `environment variable key "C" not found in file "app.env"`, config: true},
		{name: "env file: a missing file fails even when optional (upstream's words)",
			volumes: []corev1.Volume{{Name: "config"}},
			c:       corev1.Container{Env: []corev1.EnvVar{{Name: "C", ValueFrom: fileKey("config", "nope.env", "C", true)}}},
			err:     "couldn't parse env file", config: true},
		{name: "env file: a file that does not parse",
			volumes: []corev1.Volume{{Name: "config"}},
			c:       corev1.Container{Env: []corev1.EnvVar{{Name: "A", ValueFrom: fileKey("config", "broken.env", "A", false)}}},
			err:     "couldn't parse env file", config: true},
		{name: "env file: no such volume",
			c:   corev1.Container{Env: []corev1.EnvVar{{Name: "A", ValueFrom: fileKey("config", "app.env", "A", true)}}},
			err: `cannot find the volume "config" referenced by FileKeyRef`, config: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			objs := &objects{failing: "failing",
				configMaps: map[string]map[string]string{"cfg": {"mode": "fast", "level": "3"}, "other": {"level": "4", "extra": "e"},
					"odd": {"1digit": "1", "ok-name": "o", "dotted.name": "d", "has space": "s", "a=b": "x"}},
				secrets: map[string]map[string][]byte{"sec": {"user": []byte("bob"), "password": []byte("s3cret")}}}
			pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p", Labels: map[string]string{"app": "web"}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{tc.c}, Volumes: tc.volumes}, Status: corev1.PodStatus{PodIP: "10.244.0.9"}}
			in := EnvInputs{HostIP: "192.0.2.10", Objects: objs,
				Allocatable: func() corev1.ResourceList {
					return corev1.ResourceList{"cpu": resource.MustParse("3"), "memory": resource.MustParse("6Gi")}
				},
				ReadEnvFile: func(vol *corev1.Volume, path string) ([]byte, error) {
					dir := vol.Name
					if vol.HostPath != nil {
						dir = vol.HostPath.Path
					}
					if s, ok := files[dir+"/"+path]; ok {
						return []byte(s), nil
					}
					return nil, errors.New("no such file")
				}}
			if tc.services {
				in.ServiceEnv = svcEnv
			}
			got, err := Env(pod, &pod.Spec.Containers[0], in)
			if tc.err != "" {
				var ce ConfigError
				if err == nil || err.Error() != tc.err || errors.As(err, &ce) != tc.config {
					t.Fatalf("got %v (a ConfigError: %v), want %q (a ConfigError: %v)", err, errors.As(err, &ce), tc.err, tc.config)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got  %s\nwant %s", kvString(got), kvString(tc.want))
			}
		})
	}
}

func kvString(kvs []*runtimeapi.KeyValue) string {
	s := ""
	for _, kv := range kvs {
		s += kv.Key + "=" + string(kv.Value) + " "
	}
	return s
}

// Each ConfigMap and Secret is read once per environment, however often it is named,
// and the node's allocatable once, only when a resourceFieldRef needs it.
func TestEnvReadsEachObjectOnce(t *testing.T) {
	objs := &objects{configMaps: map[string]map[string]string{"cfg": {"a": "1", "b": "2"}},
		secrets: map[string]map[string][]byte{"sec": {"a": []byte("x")}}}
	allocs := 0
	in := EnvInputs{Objects: objs, Allocatable: func() corev1.ResourceList { allocs++; return corev1.ResourceList{"cpu": resource.MustParse("2")} }}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p"}}
	c := &corev1.Container{Name: "c", EnvFrom: []corev1.EnvFromSource{{ConfigMapRef: cmRef("cfg", false)}, {SecretRef: secRef("sec", false)}},
		Env: []corev1.EnvVar{{Name: "A", ValueFrom: cmKey("cfg", "a", false)}, {Name: "B", ValueFrom: cmKey("cfg", "b", false)},
			{Name: "S", ValueFrom: secKey("sec", "a", false)}, {Name: "N", ValueFrom: cmKey("none", "a", true)}, {Name: "M", ValueFrom: cmKey("none", "a", true)}}}
	pod.Spec.Containers = []corev1.Container{*c}
	if _, err := Env(pod, c, in); err != nil {
		t.Fatal(err)
	}
	want := map[string]int{"configmaps/cfg": 1, "secrets/sec": 1, "configmaps/none": 2} // a missing one is asked again
	if !reflect.DeepEqual(objs.reads, want) || allocs != 0 {
		t.Errorf("reads %v, allocatable asked %d times; want %v and 0", objs.reads, allocs, want)
	}
	c.Env = []corev1.EnvVar{{Name: "X", ValueFrom: res("limits.cpu", "1")}, {Name: "Y", ValueFrom: res("limits.cpu", "1m")}}
	pod.Spec.Containers = []corev1.Container{*c}
	got, err := Env(pod, c, in)
	if err != nil {
		t.Fatal(err)
	}
	if allocs != 1 || kvString(got[len(got)-2:]) != "X=2 Y=2000 " {
		t.Errorf("allocatable asked %d times, got %s", allocs, kvString(got))
	}
}

func TestFieldValue(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p", UID: "u-1",
		Labels: map[string]string{"app": "web", "a.b/c": "d"}, Annotations: map[string]string{"note": "n"}},
		Spec:   corev1.PodSpec{NodeName: "n1", ServiceAccountName: "sa"},
		Status: corev1.PodStatus{PodIP: "10.0.0.1", PodIPs: []corev1.PodIP{{IP: "10.0.0.1"}, {IP: "fd00::1"}}}}
	cases := []struct{ path, want, err string }{
		{"metadata.name", "p", ""},
		{"metadata.namespace", "ns", ""},
		{"metadata.uid", "u-1", ""},
		{"metadata.labels['app']", "web", ""},
		{"metadata.labels['a.b/c']", "d", ""},
		{"metadata.labels['absent']", "", ""},
		{"metadata.annotations['note']", "n", ""},
		{"spec.nodeName", "n1", ""},
		{"spec.serviceAccountName", "sa", ""},
		{"status.hostIP", "192.0.2.10", ""},
		{"status.hostIPs", "192.0.2.10", ""},
		{"status.podIP", "10.0.0.1", ""},
		{"status.podIPs", "10.0.0.1,fd00::1", ""},
		{"metadata.labels", "", `unsupported fieldPath "metadata.labels"`}, // volumes only, formatted by their caller
		{"spec.schedulerName", "", `unsupported fieldPath "spec.schedulerName"`},
	}
	for _, c := range cases {
		got, err := FieldValue(pod, c.path, "192.0.2.10")
		if got != c.want || (err == nil) != (c.err == "") || (err != nil && err.Error() != c.err) {
			t.Errorf("%s: got %q, %v; want %q, %q", c.path, got, err, c.want, c.err)
		}
	}
	// status.podIPs before the sandbox reported its list
	pod.Status.PodIPs = nil
	if got, _ := FieldValue(pod, "status.podIPs", ""); got != "10.0.0.1" {
		t.Errorf("podIPs from podIP: %q", got)
	}
	pod.Status.PodIP = ""
	if got, _ := FieldValue(pod, "status.podIPs", ""); got != "" {
		t.Errorf("no pod IP yet: %q", got)
	}
}
