//go:build unix

package limits

import "syscall"

// descriptorLimit is the soft RLIMIT_NOFILE (infinity reads as a huge value).
func descriptorLimit() (uint64, bool) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, false
	}
	return uint64(rl.Cur), true
}
