package host

import (
	"errors"
	"os"
)

// AppArmor is upstream's apparmor validateHost (with the libcontainer check it uses):
// nil when the kernel enforces AppArmor, else why not.
func AppArmor() error {
	if _, err := os.Stat("/sys/kernel/security/apparmor"); err == nil {
		if buf, err := os.ReadFile("/sys/module/apparmor/parameters/enabled"); err == nil && len(buf) > 1 && buf[0] == 'Y' {
			return nil
		}
	}
	return errors.New("AppArmor is not enabled on the host")
}
