package controllers

import (
	"reflect"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Command and args get $(VAR) expanded against the container's resolved environment,
// as upstream's ExpandContainerCommandAndArgs: unknown references stay, $$ escapes.
func TestExpandCommandAndArgs(t *testing.T) {
	envs := []*runtimeapi.KeyValue{{Key: "TEST_VAR", Value: []byte("test-value")}, {Key: "POD_IP", Value: []byte("10.0.0.1")}}
	got := expandAll([]string{"sh", "-c", `TEST_VAR=wrong echo "$(TEST_VAR)"`, "$(POD_IP):$(NOPE)", "$$(TEST_VAR)", "$(", "a$b"}, envs)
	want := []string{"sh", "-c", `TEST_VAR=wrong echo "test-value"`, "10.0.0.1:$(NOPE)", "$(TEST_VAR)", "$(", "a$b"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("expandAll = %q, want %q", got, want)
	}
	if expandAll(nil, envs) != nil {
		t.Error("no command must stay nil (the image's entrypoint)")
	}
}
