#!/usr/bin/env bash
# cluster-test: build both images, then run test/cluster (build tag "cluster"),
# which starts docker-compose.cluster.yml (three proxies and NATS) under a
# project name of its own on free ports of 127.0.0.1 and, with real WebSocket
# clients on the three proxies, cuts a proxy off the bus network, pauses one,
# restarts NATS, stops one gracefully and kills one, judging every client's
# log each time.
# About a minute with warm build caches. CLUSTER_TEST_RUN='TestCluster/partition' runs one case.
#
# Without a Docker engine it skips (exit 0), except under CI=true, where that
# is a failure. Whatever happens, the project is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

# Prefer the `docker compose` plugin, else the standalone docker-compose.
if [[ -z "${COMPOSE:-}" ]]; then
	if docker compose version >/dev/null 2>&1; then COMPOSE="docker compose"; else COMPOSE=docker-compose; fi
fi
export COMPOSE
read -r -a compose <<<"$COMPOSE"

missing=""
if ! docker info >/dev/null 2>&1; then
	missing="no Docker engine is reachable ('docker info' failed)"
elif ! "${compose[@]}" version >/dev/null 2>&1; then
	missing="'$COMPOSE version' failed: neither the docker compose plugin nor docker-compose works"
fi
if [[ -n "$missing" ]]; then
	if [[ "${CI:-}" == true ]]; then
		echo "cluster-test: FAIL: $missing (CI=true)" >&2
		exit 1
	fi
	echo "cluster-test: SKIP: $missing; install Docker to run this test"
	exit 0
fi

export WSPROXY_CLUSTER_PROJECT="wsproxy-cluster-test-$RANDOM-$$"
cleanup() {
	# The test takes its project down itself; this covers an interrupted run
	# (and a container left paused or a network left cut).
	docker ps -q --filter "label=com.docker.compose.project=$WSPROXY_CLUSTER_PROJECT" --filter status=paused |
		xargs -r docker unpause >/dev/null 2>&1 || true
	"${compose[@]}" --file docker-compose.cluster.yml --project-name "$WSPROXY_CLUSTER_PROJECT" \
		down --volumes --remove-orphans --timeout 5 >/dev/null 2>&1 || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "cluster-test: $COMPOSE ($("${compose[@]}" version --short 2>/dev/null || echo '?')), project $WSPROXY_CLUSTER_PROJECT"
make --no-print-directory image image-nats
go test -tags cluster -count=1 -v -timeout 10m -run "${CLUSTER_TEST_RUN:-.}" ./test/cluster/
