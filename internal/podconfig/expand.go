package podconfig

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Expand replaces the variable references in s as upstream's expansion.Expand with
// MappingFuncFor: $(NAME) becomes NAME's value, or stays as written when lookup does not
// know NAME (NAME is everything up to the first ')', whatever it holds); $$ is a single
// $ (so $$(NAME) is the text $(NAME)); a $ followed by anything else, an unclosed $(,
// and a $ at the end stay as they are.
func Expand(s string, lookup func(name string) (string, bool)) string {
	if !strings.Contains(s, "$") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch next := s[i+1]; next {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteString("$(")
				i++
				continue
			}
			name := s[i+2 : i+2+end]
			if v, ok := lookup(name); ok {
				b.WriteString(v)
			} else {
				b.WriteString("$(" + name + ")")
			}
			i += 2 + end
		default:
			b.WriteByte('$')
			b.WriteByte(next)
			i++
		}
	}
	return b.String()
}

// ExpandAll is upstream's ExpandContainerCommandAndArgs: $(VAR) in each of command or
// args is replaced with the container's environment (as resolved for the runtime).
// Nil stays nil (the image's entrypoint or cmd is used).
func ExpandAll(in []string, envs []*runtimeapi.KeyValue) []string {
	if len(in) == 0 {
		return nil
	}
	vals := make(map[string]string, len(envs))
	for _, kv := range envs {
		vals[kv.Key] = string(kv.Value)
	}
	out := make([]string, len(in))
	for i, s := range in {
		out[i] = Expand(s, lookupIn(vals))
	}
	return out
}

func lookupIn(vals map[string]string) func(string) (string, bool) {
	return func(name string) (string, bool) {
		v, ok := vals[name]
		return v, ok
	}
}

// FieldValue is the value of a downward API fieldRef for env and downwardAPI volumes,
// as the kubelet's podFieldSelectorRuntimeValue for the paths the API server accepts:
// the pod's name, namespace, uid, one label or annotation (metadata.labels['k']),
// spec.nodeName, spec.serviceAccountName, the node's address (status.hostIP and
// status.hostIPs: one address family here) and the pod's (status.podIP, and
// status.podIPs comma-separated). Other paths are an error.
func FieldValue(pod *corev1.Pod, path, hostIP string) (string, error) {
	switch path {
	case "metadata.name":
		return pod.Name, nil
	case "metadata.namespace":
		return pod.Namespace, nil
	case "metadata.uid":
		return string(pod.UID), nil
	case "spec.nodeName":
		return pod.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, nil
	case "status.hostIP", "status.hostIPs":
		return hostIP, nil
	case "status.podIP":
		return pod.Status.PodIP, nil
	case "status.podIPs":
		var ips []string
		for _, ip := range pod.Status.PodIPs {
			ips = append(ips, ip.IP)
		}
		if len(ips) == 0 && pod.Status.PodIP != "" {
			ips = []string{pod.Status.PodIP}
		}
		return strings.Join(ips, ","), nil
	}
	if k, ok := subscript(path, "metadata.labels"); ok {
		return pod.Labels[k], nil
	}
	if k, ok := subscript(path, "metadata.annotations"); ok {
		return pod.Annotations[k], nil
	}
	return "", fmt.Errorf("unsupported fieldPath %q", path)
}

// subscript is k of "<field>['k']".
func subscript(path, field string) (string, bool) {
	rest, ok := strings.CutPrefix(path, field+"['")
	if !ok {
		return "", false
	}
	return strings.TrimSuffix(rest, "']"), true
}
