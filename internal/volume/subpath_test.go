package volume

import (
	"os"
	"path/filepath"
	"testing"
)

// A missing subPath is created with the mode of the volume's root, special bits
// included, whatever the umask (upstream's makeMounts with SafeMakeDir).
func TestMakeSubPath(t *testing.T) {
	vol := t.TempDir()
	if err := os.Chmod(vol, 0o777|os.ModeSetgid|os.ModeSticky); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(vol, "a", "test-sub")
	if err := makeSubPath(vol, sub); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(sub)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := fi.Mode(), os.ModeDir|0o777|os.ModeSetgid|os.ModeSticky; got != want {
		t.Errorf("subPath mode %v, want %v", got, want)
	}
}
