package cgroupfs

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func write(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestUintAndInt(t *testing.T) {
	cases := []struct {
		content string
		u       uint64
		uErr    bool
		i       int64
		iErr    bool
	}{
		{"12345\n", 12345, false, 12345, false},
		{"  7 \n", 7, false, 7, false},
		{"-1\n", 0, true, -1, false},
		{"max\n", 0, true, 0, true},
		{"", 0, true, 0, true},
		{"18446744073709551615\n", 18446744073709551615, false, 9223372036854775807, true}, // ParseInt gives its bound with the error
	}
	for _, c := range cases {
		p := write(t, c.content)
		u, err := Uint(p)
		if u != c.u || (err != nil) != c.uErr {
			t.Errorf("Uint(%q) = %d, %v", c.content, u, err)
		}
		i, err := Int(p)
		if i != c.i || (err != nil) != c.iErr {
			t.Errorf("Int(%q) = %d, %v", c.content, i, err)
		}
	}
	if _, err := Uint(filepath.Join(t.TempDir(), "absent")); !os.IsNotExist(err) {
		t.Errorf("a missing file: %v", err)
	}
	if _, err := Int(filepath.Join(t.TempDir(), "absent")); !os.IsNotExist(err) {
		t.Errorf("a missing file: %v", err)
	}
}

func TestKeyed(t *testing.T) {
	got, err := Keyed(write(t, "total_rss 4096\ntotal_inactive_file 100\nusage_usec 5\nweird line here\nneg -1\nnan x\n\n"))
	want := map[string]uint64{"total_rss": 4096, "total_inactive_file": 100, "usage_usec": 5}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, %v; want %v", got, err, want)
	}
	if got, err := Keyed(write(t, "")); err != nil || len(got) != 0 {
		t.Errorf("empty: %v, %v", got, err)
	}
	if _, err := Keyed(filepath.Join(t.TempDir(), "absent")); !os.IsNotExist(err) {
		t.Errorf("a missing file: %v", err)
	}
}
