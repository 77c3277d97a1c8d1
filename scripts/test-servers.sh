#!/usr/bin/env bash
# Starts (or stops) the real servers that the Redis and S3 store tests run
# against: redis-server and versitygw (an S3 gateway) with its posix backend,
# both on free loopback ports, their data under a state directory.
#
#   eval "$(scripts/test-servers.sh start)"   # installs what is missing, starts,
#                                             # prints export PRAAS_TEST_*=... lines
#   go test ./store/...
#   scripts/test-servers.sh stop
#
# Idempotent: start with the servers already up prints the same exports again;
# stop with nothing running does nothing. Meant for a fresh Debian machine as
# root (it may apt-get install redis-server and go install versitygw). Every
# message except the export lines goes to stderr.
#
# The state directory (pids, ports, logs, data) belongs to this checkout:
# ${TMPDIR:-/tmp}/praas-test-servers-HASH, HASH derived from the checkout's
# absolute path, so that two checkouts on one machine run their own servers.
# PRAAS_TEST_STATE names another directory.
set -euo pipefail

VERSITYGW_VERSION=v1.8.0

# shellcheck source=lib/servers.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/servers.sh"

STATE=${PRAAS_TEST_STATE:-${TMPDIR:-/tmp}/praas-test-servers-$(checkout_id)}
# Redis asks for a password: processes share the host's network, and an
# open Redis would let any function read and rewrite the registry.
REDIS_PASSWORD=praastestredis
S3_ACCESS_KEY=praastest
S3_SECRET_KEY=praastestsecret
S3_BUCKET=praas-test
S3_REGION=us-east-1

log() { echo "test-servers: $*" >&2; }
die() { log "$*"; exit 1; }

# redis_answers PORT, http_answers PORT: true if a server answers there. They
# run in a subshell so that a refused connection does not end the script.
redis_answers() (
	local line=""
	exec 3<>"/dev/tcp/127.0.0.1/$1" || return 1
	printf 'AUTH %s\r\nPING\r\n' "$REDIS_PASSWORD" >&3
	read -r -t 2 line <&3 || true # +OK to AUTH
	read -r -t 2 line <&3 || true
	exec 3>&-
	[[ $line == +PONG* ]]
)

http_answers() (
	local line=""
	exec 3<>"/dev/tcp/127.0.0.1/$1" || return 1
	printf 'GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
	read -r -t 2 line <&3 || true
	exec 3>&-
	[[ $line == HTTP/1.* ]]
)

install_redis() {
	command -v redis-server >/dev/null && return
	log "installing redis-server"
	apt-get update >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server >&2
}

# find_versitygw: prints the path of versitygw, installing it if needed.
find_versitygw() {
	local bin
	bin=$(command -v versitygw 2>/dev/null) && { echo "$bin"; return; }
	command -v go >/dev/null || die "go is needed to install versitygw"
	bin="$(go env GOPATH)/bin/versitygw"
	if [[ ! -x $bin ]]; then
		log "installing versitygw $VERSITYGW_VERSION (takes a few minutes)"
		GOBIN="$(dirname "$bin")" go install "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION" >&2
	fi
	echo "$bin"
}

print_env() {
	local rport s3port
	rport=$(cat "$STATE/redis.port")
	s3port=$(cat "$STATE/versitygw.port")
	echo "export PRAAS_TEST_REDIS='redis://:$REDIS_PASSWORD@127.0.0.1:$rport/0'"
	echo "export PRAAS_TEST_S3='s3://$S3_BUCKET?endpoint=127.0.0.1:$s3port&access_key=$S3_ACCESS_KEY&secret_key=$S3_SECRET_KEY&secure=false&region=$S3_REGION'"
}

start() {
	mkdir -p "$STATE"
	install_redis
	local vgw
	vgw=$(find_versitygw)

	if ! running redis; then
		local port
		port=$(free_port)
		mkdir -p "$STATE/redis-data"
		# Append-only with fsync on every write, as a durable deployment runs.
		spawn redis redis-server --bind 127.0.0.1 --port "$port" --dir "$STATE/redis-data" \
			--requirepass "$REDIS_PASSWORD" \
			--save "" --appendonly yes --appendfsync always --daemonize no
		echo "$port" >"$STATE/redis.port"
	fi
	wait_for redis redis_answers "$(cat "$STATE/redis.port")"

	if ! running versitygw; then
		local port
		port=$(free_port)
		mkdir -p "$STATE/s3-data"
		ROOT_ACCESS_KEY=$S3_ACCESS_KEY ROOT_SECRET_KEY=$S3_SECRET_KEY \
			spawn versitygw "$vgw" --port "127.0.0.1:$port" --region "$S3_REGION" --quiet \
			posix "$STATE/s3-data"
		echo "$port" >"$STATE/versitygw.port"
	fi
	wait_for versitygw http_answers "$(cat "$STATE/versitygw.port")"

	log "redis-server and versitygw are up (state in $STATE)"
	print_env
}

stop() { stop_servers versitygw redis; }

case ${1:-} in
start) start ;;
stop) stop ;;
*) die "usage: $0 start|stop" ;;
esac
