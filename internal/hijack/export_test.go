package hijack

// ScanClientFrames runs a new frame parser over chunks, as Read would over
// what it hands out, and returns how many bytes it let through, the data
// payload among them, whether it refused a close frame, and whether it ended
// between frames.
func ScanClientFrames(chunks ...[]byte) (handedOut int, payload int64, refused, atBoundary bool) {
	var f frameParser
	for _, p := range chunks {
		n, pl, ok := f.scan(p)
		handedOut += n
		payload += pl
		if !ok {
			return handedOut, payload, true, false
		}
	}
	return handedOut, payload, false, f.hdrN == 0 && f.left == 0
}
