package podconfig

import "testing"

func TestEnvFileValue(t *testing.T) {
	data := []byte("# settings\nCONFIG_1='value1'\n\n  CONFIG_2='two\nlines' # note\nEMPTY= 'x'\n")
	for key, want := range map[string]string{"CONFIG_1": "value1", "CONFIG_2": "two\nlines", "EMPTY": "", "MISSING": ""} {
		if got, err := EnvFileValue(data, key); err != nil || got != want {
			t.Errorf("%s: %q %v, want %q", key, got, err, want)
		}
	}
	for _, bad := range []string{"A=unquoted\n", "A ='x'\n", "=x\n", "A='open\n", "A='x' y\n", "noequals\n"} {
		if _, err := EnvFileValue([]byte(bad), "A"); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}
