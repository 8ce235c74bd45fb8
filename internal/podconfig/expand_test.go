package podconfig

import (
	"reflect"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// The cases of upstream's expansion tests (third_party/forked/golang/expansion), and
// the ones where a hand-written scanner most easily differs from it.
func TestExpand(t *testing.T) {
	vals := map[string]string{"VAR_A": "A", "VAR_B": "B", "VAR_C": "C", "VAR_REF": "$(VAR_A)", "VAR_EMPTY": "", "": "blank"}
	cases := []struct{ in, want string }{
		{"", ""},
		{"no references", "no references"},
		{"$(VAR_A)", "A"},
		{"___$(VAR_B)___", "___B___"},
		{"$(VAR_C)_$(VAR_A)", "C_A"},
		{"$(VAR_A)$(VAR_B)$(VAR_C)", "ABC"},
		{"$(VAR_EMPTY)", ""},
		{"$(VAR_REF)", "$(VAR_A)"}, // values are not expanded again
		{"$()", "blank"},           // the empty name is a name
		{"$(UNKNOWN)", "$(UNKNOWN)"},
		{"x$(UNKNOWN)y$(VAR_A)", "x$(UNKNOWN)yA"},
		{"$$(VAR_B)", "$(VAR_B)"},
		{"$$$(VAR_A)", "$A"},
		{"$$$$(VAR_A)", "$$(VAR_A)"},
		{"f000-$$VAR_A", "f000-$VAR_A"},
		{"$VAR_A", "$VAR_A"},
		{"$", "$"},
		{"$$", "$"},
		{"$$$", "$$"},
		{"a$b", "a$b"},
		{"$(", "$("},
		{"$(VAR_A", "$(VAR_A"},
		{"$(VAR_A $(VAR_B)", "$(VAR_A $(VAR_B)"}, // the name runs to the first ')'
		{"$(VAR_$(VAR_A))", "$(VAR_$(VAR_A))"},
		{"$(VAR_A$$)", "$(VAR_A$$)"},
		{"$(VAR_A))", "A)"},
		{"((VAR_A))", "((VAR_A))"},
		{"$(VAR_A)-$", "A-$"},
	}
	for _, c := range cases {
		if got := Expand(c.in, lookupIn(vals)); got != c.want {
			t.Errorf("Expand(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

// Command and args get $(VAR) expanded against the container's resolved environment,
// as upstream's ExpandContainerCommandAndArgs: unknown references stay, $$ escapes.
func TestExpandAll(t *testing.T) {
	envs := []*runtimeapi.KeyValue{{Key: "TEST_VAR", Value: []byte("test-value")}, {Key: "POD_IP", Value: []byte("10.0.0.1")}}
	got := ExpandAll([]string{"sh", "-c", `TEST_VAR=wrong echo "$(TEST_VAR)"`, "$(POD_IP):$(NOPE)", "$$(TEST_VAR)", "$(", "a$b"}, envs)
	want := []string{"sh", "-c", `TEST_VAR=wrong echo "test-value"`, "10.0.0.1:$(NOPE)", "$(TEST_VAR)", "$(", "a$b"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ExpandAll = %q, want %q", got, want)
	}
	if ExpandAll(nil, envs) != nil || ExpandAll([]string{}, envs) != nil {
		t.Error("no command must stay nil (the image's entrypoint)")
	}
}
