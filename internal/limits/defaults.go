package limits

// DefaultMaxConnections is the default of --max-connections: the process's
// descriptor limit (the soft RLIMIT_NOFILE, which Go raises to the hard
// limit at start on Linux and macOS) minus headroom of max(64, 10%), so that
// /healthz, /metrics, the admin API, logs and the listener itself still have
// descriptors while /ws is full; at most maxDefaultConnections, at least
// minDefaultConnections. Without an rlimit (Windows, Plan 9, wasm) it is
// fallbackMaxConnections.
//
// For example: a limit of 512 gives 448; 1024 gives 922; 20000 gives 18000; 1048576 gives
// 100000 (the cap).
func DefaultMaxConnections() int {
	n, ok := descriptorLimit()
	if !ok {
		return fallbackMaxConnections
	}
	return maxConnectionsFor(n)
}

const (
	maxDefaultConnections  = 100000 // a sane ceiling whatever the descriptor limit
	minDefaultConnections  = 32     // below this the process is not usable anyway
	fallbackMaxConnections = 10000
)

// maxConnectionsFor is DefaultMaxConnections for a descriptor limit n.
func maxConnectionsFor(n uint64) int {
	if n > 2*maxDefaultConnections {
		return maxDefaultConnections
	}
	d := int(n) - max(64, int(n)/10)
	return min(max(d, minDefaultConnections), maxDefaultConnections)
}
