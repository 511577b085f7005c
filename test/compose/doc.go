// Package compose holds the docker-compose smoke test of the wsproxy image:
// it starts docker-compose.yml under a project of its own, passes messages
// between two real WebSocket clients through the published port, stops the
// stack and checks how everything ended.
//
// The test needs a Docker engine and the wsproxy:local image, so it is built
// only with the compose tag; `make compose-test` builds the image and runs it.
package compose
