package host

import (
	"strings"
	"testing"
)

const mountinfo = `22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/root rw
30 22 0:26 / /var rw,relatime - tmpfs tmpfs rw
31 30 8:1 /lib/kubelet /var/lib/kubelet rw,relatime shared:7 master:1 - ext4 /dev/root rw
32 22 8:1 /a /with\040space rw - ext4 /dev/root rw
`

func TestIsShared(t *testing.T) {
	for path, want := range map[string]bool{
		"/":                       true,
		"/home/x":                 true,  // on /
		"/var/cache":              false, // on /var, private
		"/var/lib/kubelet":        true,  // its own shared mount
		"/var/lib/kubelet/pods/x": true,
		"/var/lib/kubeletx":       false, // not under /var/lib/kubelet: on /var
		"/with space/dir":         false,
	} {
		got, err := isShared(strings.NewReader(mountinfo), path)
		if err != nil || got != want {
			t.Errorf("isShared(%q) = %v, %v; want %v", path, got, err, want)
		}
	}
}
