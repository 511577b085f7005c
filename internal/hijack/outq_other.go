//go:build !linux

package hijack

// Unacked is the number of bytes written to the socket that the peer has not
// acknowledged yet; -1 here, where it cannot be known.
func (c *Conn) Unacked() int { return -1 }
