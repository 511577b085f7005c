// Package cluster holds the fault tests of the wsproxy cluster: it starts
// docker-compose.cluster.yml (three proxies and NATS) under a project of its
// own, connects real WebSocket clients to the three proxies' published ports,
// and cuts a proxy off the bus network, pauses one, restarts NATS, stops one
// gracefully and kills one while they talk. Every client checks every message it receives (its
// sender, that sender's counter, length and checksum), so that each log is
// judged: complete, or a gap-free prefix ended by a close code the fault
// allows. A gap without a close fails.
//
// The tests need a Docker engine and the wsproxy:local and wsproxy-nats:local
// images, so they are built only with the cluster tag; `make cluster-test`
// builds the images and runs them.
package cluster
