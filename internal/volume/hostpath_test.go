package volume

import (
	"os"
	"path/filepath"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"
)

func TestCheckHostPath(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "f")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing")
	for _, tt := range []struct {
		name string
		path string
		typ  *corev1.HostPathType
		want string // error text; "" for none
	}{
		{"unset type: no check", missing, nil, ""},
		{"empty type: no check", missing, ptr.To(corev1.HostPathUnset), ""},
		{"directory", dir, ptr.To(corev1.HostPathDirectory), ""},
		{"directory missing", missing, ptr.To(corev1.HostPathDirectory),
			"hostPath type check failed, " + missing + " is not a directory, unable to determine its type: path \"" + missing + "\" does not exist"},
		{"directory is a file", file, ptr.To(corev1.HostPathDirectory), "hostPath type check failed: " + file + " is not a directory, it's a File"},
		{"file is a directory", dir, ptr.To(corev1.HostPathFile), "hostPath type check failed: " + dir + " is not a file, it's a Directory"},
		{"socket", file, ptr.To(corev1.HostPathSocket), "hostPath type check failed: " + file + " is not a socket file, it's a File"},
		{"char device", "/dev/null", ptr.To(corev1.HostPathCharDev), ""},
		{"block device is a char device", "/dev/null", ptr.To(corev1.HostPathBlockDev),
			"hostPath type check failed: /dev/null is not a block device, it's a CharDevice"},
		{"FileOrCreate on a directory", dir, ptr.To(corev1.HostPathFileOrCreate), "hostPath type check failed: " + dir + " is not a file, it's a Directory"},
		{"invalid type", dir, ptr.To(corev1.HostPathType("Nope")), "Nope is an invalid volume type"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckHostPath(&corev1.HostPathVolumeSource{Path: tt.path, Type: tt.typ})
			got := ""
			if err != nil {
				got = err.Error()
			}
			if got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
	// the OrCreate types create what is missing
	newDir, newFile := filepath.Join(dir, "a", "b"), filepath.Join(dir, "g")
	if err := CheckHostPath(&corev1.HostPathVolumeSource{Path: newDir, Type: ptr.To(corev1.HostPathDirectoryOrCreate)}); err != nil {
		t.Fatal(err)
	}
	if err := CheckHostPath(&corev1.HostPathVolumeSource{Path: newFile, Type: ptr.To(corev1.HostPathFileOrCreate)}); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(newDir); err != nil || !st.IsDir() {
		t.Errorf("DirectoryOrCreate: %v", err)
	}
	if st, err := os.Stat(newFile); err != nil || !st.Mode().IsRegular() {
		t.Errorf("FileOrCreate: %v", err)
	}
}
