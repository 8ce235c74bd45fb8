package host

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// MakeRShared is the kubelet's MakeRShared for its root folder (setupDataDirs): unless the
// mount that holds path is already shared, path is bind-mounted onto itself and made
// rshared, so that mounts made inside it (pod volumes, and those a container with
// Bidirectional mount propagation makes in a volume) propagate between the agent, the
// runtime and the containers. Only path's own mount changes.
func MakeRShared(path string) error {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	shared, err := isShared(f, path)
	_ = f.Close()
	if err != nil {
		return err
	}
	if shared {
		return nil
	}
	if err := unix.Mount(path, path, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind-mounting %s onto itself: %w", path, err)
	}
	if err := unix.Mount("", path, "", unix.MS_SHARED|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("making %s rshared: %w", path, err)
	}
	return nil
}

// isShared tells from a mountinfo table whether the mount that holds path (the longest
// mount point that is a prefix of it) has shared propagation (a "shared:N" optional
// field).
func isShared(mountinfo io.Reader, path string) (bool, error) {
	path = filepath.Clean(path)
	best, shared, found := "", false, false
	sc := bufio.NewScanner(mountinfo)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		// id parent major:minor root mountpoint options [optional fields...] - fstype source super
		fields := strings.Fields(sc.Text())
		if len(fields) < 7 {
			continue
		}
		mp := unescapeMountinfo(fields[4])
		if mp != path && !strings.HasPrefix(path, strings.TrimSuffix(mp, "/")+"/") {
			continue
		}
		if found && len(mp) < len(best) {
			continue
		}
		best, found, shared = mp, true, false
		for _, opt := range fields[6:] {
			if opt == "-" {
				break
			}
			if strings.HasPrefix(opt, "shared:") {
				shared = true
			}
		}
	}
	if err := sc.Err(); err != nil {
		return false, err
	}
	if !found {
		return false, fmt.Errorf("no mount holds %s", path)
	}
	return shared, nil
}

// unescapeMountinfo undoes mountinfo's octal escapes (\040 for a space, …).
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v int
			if _, err := fmt.Sscanf(s[i+1:i+4], "%3o", &v); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
