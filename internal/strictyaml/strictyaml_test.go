package strictyaml

import (
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

type inner struct {
	Name string `json:"name"`
}

type T struct {
	metav1.TypeMeta `json:",inline"`
	Reserved        map[string]string `json:"systemReserved,omitempty"`
	Count           int               `json:"count"`
	NodeName        string            `json:"nodeName"`
	Items           []inner           `json:"items"`
	Period          metav1.Duration   `json:"period"`
}

func TestUnmarshal(t *testing.T) {
	var v T
	err := Unmarshal([]byte("apiVersion: a\nsystemReserved: {cpu: 1, Memory: 1Gi}\ncount: 3\nnodeName: node-1\nitems: [{name: x}]\nperiod: 1s\n"), &v)
	if err != nil || v.APIVersion != "a" || v.Count != 3 || v.Reserved["cpu"] != "1" || v.Reserved["Memory"] != "1Gi" || v.NodeName != "node-1" || v.Items[0].Name != "x" {
		t.Fatalf("got %+v, %v", v, err)
	}
	for in, want := range map[string]string{
		"ApiVersion: a\n":        `unknown field "ApiVersion" (the field is "apiVersion"`,
		"sYstemReserved: {}\n":   `unknown field "sYstemReserved"`,
		"items: [{Name: x}]\n":   `unknown field "items0.Name"`,
		"other: 1\n":             `unknown field "other"`,
		"count: 1\ncount: 2\n":   `already set`,
		"count: x\n":             "cannot unmarshal",
		"- a\n":                  "cannot unmarshal",
		"{\"Count\": 1}":         `unknown field "Count"`,
		"period: 1s\nPeriod: 2s": "Period",
	} {
		var v T
		err := Unmarshal([]byte(in), &v)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want one containing %q", in, err, want)
		}
	}
}
