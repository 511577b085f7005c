#!/usr/bin/env bash
# What a newcomer does first, on a fresh clone of the current commit:
#   1. every relative link of the Markdown files resolves (file, and heading anchor if any);
#   2. `proxy --version` (make build) prints what `git describe` says: the tag on a tagged commit;
#   3. `make run` serves the page, and Ctrl-C (SIGINT to make's process group, as a terminal
#      sends it) stops it cleanly: the proxy drains and exits 0, make prints no error;
#      SIGINT to the proxy alone makes `make run` exit 0.
# The proxy listens on 127.0.0.1:0 (a free port), never on a fixed one.
set -euo pipefail
root=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)
commit=$(git -C "$root" rev-parse HEAD)
tmp=$(mktemp -d)
pgid=""
cleanup() {
	if [ -n "$pgid" ]; then kill -KILL -- "-$pgid" 2>/dev/null || true; fi
	rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "fresh-clone-check: FAIL: $*" >&2; exit 1; }

git clone -q "$root" "$tmp/wsproxy"
cd "$tmp/wsproxy"
git checkout -q "$commit"
echo "fresh clone of $commit ($(git describe --tags --always --dirty))"

# 1. Relative links.
slug() { tr 'A-Z' 'a-z' | sed -e 's/[^a-z0-9 _-]//g' -e 's/ /-/g'; }
bad=0
while IFS= read -r md; do
	dir=$(dirname "$md")
	while IFS= read -r link; do
		case "$link" in http://* | https://* | mailto:*) continue ;; esac
		path=${link%%#*}
		anchor=""
		[ "$path" != "$link" ] && anchor=${link#*#}
		target="$md"
		if [ -n "$path" ]; then
			target="$dir/$path"
			[ -e "$target" ] || { echo "  $md: $link: no such file" >&2; bad=1; continue; }
		fi
		if [ -n "$anchor" ] && [ -f "$target" ]; then
			if ! grep -E '^#{1,6} ' "$target" | sed -E 's/^#+ +//' | slug | grep -qxF "$anchor"; then
				echo "  $md: $link: no heading for #$anchor in $target" >&2
				bad=1
			fi
		fi
	done < <(grep -oE '\]\([^) ]+\)' "$md" | sed -E 's/^\]\(//; s/\)$//')
done < <(git ls-files 'README.md' 'CHANGELOG.md' 'docs/*.md')
[ "$bad" = 0 ] || fail "broken relative links"
echo "ok: relative links of README.md, CHANGELOG.md and docs/*.md resolve"

# 2. The version.
make -s build >/dev/null
want="wsproxy $(git describe --tags --always --dirty)"
got=$(bin/proxy --version) || fail "proxy --version exited $?"
[ "$got" = "$want" ] || fail "proxy --version printed '$got', want '$want'"
echo "ok: proxy --version prints '$got'"

# 3. make run, then SIGINT.
start_run() { # starts `make run` in a process group of its own; sets pgid and addr
	set -m
	PROXY_ADDR=127.0.0.1:0 PROXY_LOG_FORMAT=json make run >"$tmp/run.out" 2>"$tmp/run.err" </dev/null &
	pgid=$!
	set +m
	addr=""
	for _ in $(seq 600); do
		addr=$(sed -n 's/.*"addr":"\([^"]*\)".*"message":"proxy listening".*/\1/p' "$tmp/run.err" | head -1)
		[ -n "$addr" ] && break
		kill -0 "$pgid" 2>/dev/null || break
		sleep 0.1
	done
	[ -n "$addr" ] || fail "make run did not start listening: $(cat "$tmp/run.out" "$tmp/run.err")"
	curl -fsS --max-time 10 -o "$tmp/page.html" "http://$addr/" || fail "GET http://$addr/ failed"
	grep -q '<title>wsproxy</title>' "$tmp/page.html" || fail "GET http://$addr/ did not serve the page"
}
wait_run() { # waits (at most 30 s) for make run to end; sets status
	for _ in $(seq 300); do kill -0 "$pgid" 2>/dev/null || break; sleep 0.1; done
	kill -0 "$pgid" 2>/dev/null && fail "make run still running 30 s after SIGINT"
	status=0
	wait "$pgid" || status=$?
	pgid=""
}
check_clean() {
	grep -q '"message":"shutdown complete"' "$tmp/run.err" || fail "no 'shutdown complete' after SIGINT: $(cat "$tmp/run.err")"
	if grep -q '^make: \*\*\*' "$tmp/run.out" "$tmp/run.err"; then fail "make reported an error: $(grep -h '^make: ' "$tmp/run.out" "$tmp/run.err")"; fi
}

start_run
echo "ok: make run serves the page at http://$addr/"
kill -INT -- "-$pgid" # Ctrl-C: make and the proxy both get it
wait_run
check_clean
# make passes SIGINT on after its child ends: 130 is "stopped by Ctrl-C", not an error.
[ "$status" = 0 ] || [ "$status" = 130 ] || fail "make run exited $status after Ctrl-C"
echo "ok: Ctrl-C: the proxy drained and exited 0, make printed no error (make's status $status)"

start_run
proxy=$(pgrep -g "$pgid" -x proxy | head -1)
[ -n "$proxy" ] || fail "no process called proxy under make run"
kill -INT "$proxy"
wait_run
check_clean
[ "$status" = 0 ] || fail "make run exited $status after SIGINT to the proxy, want 0"
echo "ok: SIGINT to the proxy: make run exited 0"
echo "fresh-clone-check: PASS"
