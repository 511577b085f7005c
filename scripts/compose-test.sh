#!/usr/bin/env bash
# compose-test: build the image, then run test/compose (build tag "compose"),
# which starts docker-compose.yml under a project name of its own on a free
# port of 127.0.0.1, passes a text and a binary message between two real
# WebSocket clients, stops the stack and checks the 1001 closes and exit 0.
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
		echo "compose-test: FAIL: $missing (CI=true)" >&2
		exit 1
	fi
	echo "compose-test: SKIP: $missing; install Docker to run this test"
	exit 0
fi

export WSPROXY_COMPOSE_PROJECT="wsproxy-test-$RANDOM-$$"
cleanup() {
	# The test takes its project down itself; this covers an interrupted run.
	"${compose[@]}" --file docker-compose.yml --project-name "$WSPROXY_COMPOSE_PROJECT" \
		down --volumes --remove-orphans --timeout 5 >/dev/null 2>&1 || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "compose-test: $COMPOSE ($("${compose[@]}" version --short 2>/dev/null || echo '?')), project $WSPROXY_COMPOSE_PROJECT"
make --no-print-directory image
go test -tags compose -count=1 -v -timeout 5m ./test/compose/
