package hijack

import (
	"syscall"
	"unsafe"
)

// Unacked is the number of bytes written to the socket that the peer has not
// acknowledged yet (Linux's SIOCOUTQ), or -1 where that cannot be known. A
// count that falls shows a peer still reading.
func (c *Conn) Unacked() int {
	if c.raw == nil {
		return -1
	}
	n := int32(-1)
	err := c.raw.Control(func(fd uintptr) {
		if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TIOCOUTQ, uintptr(unsafe.Pointer(&n))); e != 0 {
			n = -1
		}
	})
	if err != nil {
		return -1
	}
	return int(n)
}
