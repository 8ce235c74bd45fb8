// Package podconfig turns a pod's spec into what the container runtime is asked for: the
// CRI sandbox and container configs, their Linux security contexts and resources, and
// the container's environment (Service links, envFrom, env with its downward API,
// ConfigMap, Secret and env file references, and $(VAR) expansion), as the kubelet's
// kubelet_pods.go and kuberuntime do.
//
// Its functions are pure: what they would read from the API server, the runtime or the
// disk comes in as an argument (a value, or a small lookup interface called only when
// the spec needs it), so they are table-tested without either.
package podconfig

import (
	"fmt"
	"path/filepath"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/validation"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// ConfigError is a container configuration problem a retry cannot fix by itself (a
// missing ConfigMap, Secret or key, an unsupported field path, a spec the runtime
// cannot be given): the container waits with CreateContainerConfigError until the
// objects or the spec change.
type ConfigError struct{ Msg string }

func (e ConfigError) Error() string { return e.Msg }

// Objects reads the pod's namespace's ConfigMaps and Secrets. A missing object is an
// error for which apierrors.IsNotFound holds.
type Objects interface {
	ConfigMap(name string) (*corev1.ConfigMap, error)
	Secret(name string) (*corev1.Secret, error)
}

// EnvInputs is what resolving a container's environment needs besides the pod.
type EnvInputs struct {
	// ServiceEnv is the pod's Service link variables (ServiceLinks); they come first
	// and env and envFrom override them.
	ServiceEnv []corev1.EnvVar
	// HostIP is the node's address, for status.hostIP and status.hostIPs.
	HostIP string
	// Objects reads the ConfigMaps and Secrets that envFrom and env refer to, each once.
	Objects Objects
	// Allocatable is the node's allocatable, asked once, only when a resourceFieldRef
	// needs it for the limits a container does not set.
	Allocatable func() corev1.ResourceList
	// ReadEnvFile reads a file of one of the pod's volumes for a fileKeyRef; path is
	// relative to the volume's folder and cannot leave it.
	ReadEnvFile func(vol *corev1.Volume, path string) ([]byte, error)
}

// Env is the container's environment as the kubelet's makeEnvironmentVariables: the
// Service link variables, then envFrom (in order, each source's keys sorted, a prefix
// prepended, invalid names skipped), then env in order, each value with $(VAR) expanded
// against what is defined before it (Expand) or resolved from its valueFrom source; a
// later definition of a name replaces an earlier one in place. Missing non-optional
// objects and keys, and values that cannot be resolved, are ConfigErrors; other errors
// of in.Objects and in.ReadEnvFile are returned as they are (a retry may fix them).
func Env(pod *corev1.Pod, c *corev1.Container, in EnvInputs) ([]*runtimeapi.KeyValue, error) {
	vals := map[string]string{}
	var order []string
	set := func(k, v string) {
		if _, ok := vals[k]; !ok {
			order = append(order, k)
		}
		vals[k] = v
	}
	for _, kv := range in.ServiceEnv {
		set(kv.Name, kv.Value)
	}
	objs := &objectCache{Objects: in.Objects}
	for _, from := range c.EnvFrom {
		var src objectRef
		switch {
		case from.ConfigMapRef != nil:
			src = objectRef{kindConfigMap, from.ConfigMapRef.Name, isTrue(from.ConfigMapRef.Optional)}
		case from.SecretRef != nil:
			src = objectRef{kindSecret, from.SecretRef.Name, isTrue(from.SecretRef.Optional)}
		default:
			continue
		}
		data, skip, err := objs.data(src)
		if err != nil {
			return nil, err
		}
		if skip {
			continue
		}
		keys := make([]string, 0, len(data))
		for k := range data {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			name := from.Prefix + k
			if len(validation.IsEnvVarName(name)) > 0 {
				continue // upstream skips invalid names (with an event)
			}
			set(name, data[k])
		}
	}
	var allocatable corev1.ResourceList
	for _, e := range c.Env {
		if e.ValueFrom == nil {
			set(e.Name, Expand(e.Value, lookupIn(vals)))
			continue
		}
		var v string
		switch vf := e.ValueFrom; {
		case vf.FieldRef != nil:
			fv, err := FieldValue(pod, vf.FieldRef.FieldPath, in.HostIP)
			if err != nil {
				return nil, ConfigError{fmt.Sprintf("env %s: %v", e.Name, err)}
			}
			v = fv
		case vf.ResourceFieldRef != nil:
			if allocatable == nil && in.Allocatable != nil {
				allocatable = in.Allocatable()
			}
			rv, err := EnvResourceValue(vf.ResourceFieldRef, pod, c, allocatable)
			if err != nil {
				return nil, ConfigError{fmt.Sprintf("env %s: %v", e.Name, err)}
			}
			v = rv
		case vf.ConfigMapKeyRef != nil || vf.SecretKeyRef != nil:
			src, key := keyRef(vf)
			data, skip, err := objs.data(src)
			if err != nil {
				return nil, err
			}
			val, ok := data[key]
			if skip || (!ok && src.optional) {
				continue
			}
			if !ok {
				return nil, ConfigError{fmt.Sprintf("couldn't find key %s in %s %s/%s", key, src.kind, pod.Namespace, src.name)}
			}
			v = val
		case vf.FileKeyRef != nil:
			// the EnvFiles feature (beta, on by default upstream): a key of an env file
			// in one of the pod's volumes, read when the container starts
			val, err := fileKeyValue(pod, vf.FileKeyRef, in.ReadEnvFile)
			if err != nil {
				return nil, err
			}
			if val == "" {
				if isTrue(vf.FileKeyRef.Optional) {
					continue
				}
				return nil, ConfigError{fmt.Sprintf("environment variable key %q not found in file %q", vf.FileKeyRef.Key, vf.FileKeyRef.Path)}
			}
			v = val
		}
		set(e.Name, v)
	}
	out := make([]*runtimeapi.KeyValue, 0, len(order))
	for _, k := range order {
		out = append(out, &runtimeapi.KeyValue{Key: k, Value: []byte(vals[k])})
	}
	return out, nil
}

// The kinds of objects env reads keys of, as upstream's messages name them.
const (
	kindConfigMap = "ConfigMap"
	kindSecret    = "Secret"
)

// objectRef is a ConfigMap or Secret that envFrom or a key reference names.
type objectRef struct {
	kind, name string
	optional   bool
}

// keyRef is the object and the key a configMapKeyRef or secretKeyRef names.
func keyRef(vf *corev1.EnvVarSource) (objectRef, string) {
	if ref := vf.ConfigMapKeyRef; ref != nil {
		return objectRef{kindConfigMap, ref.Name, isTrue(ref.Optional)}, ref.Key
	}
	ref := vf.SecretKeyRef
	return objectRef{kindSecret, ref.Name, isTrue(ref.Optional)}, ref.Key
}

// objectCache reads each ConfigMap and Secret once per environment, as upstream's
// makeEnvironmentVariables.
type objectCache struct {
	Objects
	read map[objectRef]map[string]string
}

// data is the object's data (a Secret's as strings); skip when it does not exist and is
// optional. A missing required object is a ConfigError naming it (RefError).
func (o *objectCache) data(ref objectRef) (data map[string]string, skip bool, err error) {
	key := objectRef{kind: ref.kind, name: ref.name}
	if d, ok := o.read[key]; ok {
		return d, false, nil
	}
	switch ref.kind {
	case kindConfigMap:
		var cm *corev1.ConfigMap
		if cm, err = o.ConfigMap(ref.name); err == nil {
			data = cm.Data
		}
	default:
		var sec *corev1.Secret
		if sec, err = o.Secret(ref.name); err == nil {
			data = make(map[string]string, len(sec.Data))
			for k, v := range sec.Data {
				data[k] = string(v)
			}
		}
	}
	if err != nil {
		if apierrors.IsNotFound(err) && ref.optional {
			return nil, true, nil
		}
		return nil, false, RefError(strings.ToLower(ref.kind), ref.name, err)
	}
	if o.read == nil {
		o.read = map[objectRef]map[string]string{}
	}
	o.read[key] = data
	return data, false, nil
}

// RefError is the error for an object of kind ("configmap", "secret", …) that could not
// be read: a ConfigError naming it when it does not exist, else err (a retry may fix it).
func RefError(kind, name string, err error) error {
	if apierrors.IsNotFound(err) {
		return ConfigError{fmt.Sprintf("%s %q not found", kind, name)}
	}
	return err
}

// fileKeyValue reads a fileKeyRef's key from its file in the pod's volume, as the
// kubelet's makeEnvironmentVariables (errors are the container's config errors).
func fileKeyValue(pod *corev1.Pod, ref *corev1.FileKeySelector, read func(*corev1.Volume, string) ([]byte, error)) (string, error) {
	var vol *corev1.Volume
	for i := range pod.Spec.Volumes {
		if pod.Spec.Volumes[i].Name == ref.VolumeName {
			vol = &pod.Spec.Volumes[i]
		}
	}
	if vol == nil || read == nil {
		return "", ConfigError{fmt.Sprintf("cannot find the volume %q referenced by FileKeyRef", ref.VolumeName)}
	}
	data, err := read(vol, filepath.Clean("/" + ref.Path)[1:]) // kept inside the volume
	if err != nil {
		return "", ConfigError{"couldn't parse env file"} // upstream's words, even when optional
	}
	v, err := EnvFileValue(data, ref.Key)
	if err != nil {
		return "", ConfigError{"couldn't parse env file"}
	}
	return v, nil
}

func isTrue(b *bool) bool { return b != nil && *b }
