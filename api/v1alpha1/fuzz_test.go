package v1alpha1

import (
	"encoding/json"
	"reflect"
	"testing"

	"sigs.k8s.io/yaml"
)

// FuzzParse feeds the configuration loader arbitrary bytes (the committed corpus is in
// testdata/fuzz/FuzzParse; `go test -fuzz=FuzzParse ./api/v1alpha1` explores further).
// It must never panic; what it accepts, defaults and validates must survive a round trip
// (written back as YAML, it parses and validates to the same configuration), and loading
// is deterministic.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"",
		header,
		header + "nodeName: node-1\nmaxPods: 20\nproxyMode: nftables\n",
		header + "systemReserved: {cpu: 500m, memory: 1Gi}\nkubeReserved: {ephemeral-storage: 1Gi}\nevictionHard: {memory.available: 100Mi, nodefs.available: \"10%\"}\n",
		header + "nodeStatusUpdateFrequency: 10s\nnodeStatusReportFrequency: 5m\nnodeLeaseDurationSeconds: 40\n",
		header + "clusterCIDR: 10.244.0.0/16,fd00::/48\nserviceCIDR: 10.96.0.0/16\nclusterDNS: [10.96.0.10]\n",
		header + "registerWithTaints: [{key: a, value: b, effect: NoSchedule}]\nnodeLabels: {example.com/pool: blue}\n",
		header + "allowedUnsafeSysctls: [\"kernel.msg*\", net.core.somaxconn]\nhealthzBindAddress: \":10248\"\n",
		header + "systemReserved: {memory: lots}\n",
		header + "nodeStatusUpdateFrequency: -1s\n",
		header + "unknownField: 1\n",
		`{"apiVersion":"nodekeeper.io/v1alpha1","kind":"AgentConfiguration","maxPods":-3}`,
		"apiVersion: v1\nkind: Pod\n",
		header + "evictionHard: {memory.available: \"101%\"}\n",
		header + "proxySyncPeriod: 1ns\ncontainerLogMaxSize: 1Ki\ncontainerLogMaxFiles: 1\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(data)
		if err != nil {
			return
		}
		again, err2 := Parse(data)
		if err2 != nil || !reflect.DeepEqual(cfg, again) {
			t.Fatalf("Parse is not deterministic: %v / %v", err2, again)
		}
		SetDefaults(cfg)
		if Validate(cfg) != nil {
			return
		}
		out, err := yaml.Marshal(cfg)
		if err != nil {
			t.Fatalf("a valid configuration does not marshal: %v", err)
		}
		back, err := Parse(out)
		if err != nil {
			t.Fatalf("a valid configuration written back does not parse: %v\n%s", err, out)
		}
		SetDefaults(back)
		if err := Validate(back); err != nil {
			t.Fatalf("a valid configuration written back does not validate: %v\n%s", err, out)
		}
		// compared as written (an empty map and a missing one are the same configuration)
		if a, b := mustJSON(t, cfg), mustJSON(t, back); a != b {
			t.Fatalf("round trip changed the configuration:\n%s\n%s", a, b)
		}
	})
}

func mustJSON(t *testing.T, v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
