# Helpers the scripts that run test servers on loopback share; sourced, not
# run. The sourcing script sets STATE (its state directory) and defines
# log and die first.

# checkout_id: a short hash of this checkout's absolute path.
checkout_id() {
	local root
	root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)
	if command -v sha256sum >/dev/null; then
		printf '%s' "$root" | sha256sum | cut -c1-12
	else
		printf '%s' "$root" | cksum | cut -d' ' -f1
	fi
}

# running NAME: true if STATE/NAME.pid names a live process.
running() {
	local pid
	pid=$(cat "$STATE/$1.pid" 2>/dev/null) || return 1
	kill -0 "$pid" 2>/dev/null
}

# port_in_use PORT: true if something accepts connections on 127.0.0.1:PORT.
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# free_port: prints a loopback port nothing listens on and no server of
# STATE was given (STATE/*.port), so two servers started one after the
# other never get the same one.
free_port() {
	local p i
	for i in $(seq 1 100); do
		p=$((20000 + RANDOM % 40000))
		if ! port_in_use "$p" && ! grep -qx "$p" "$STATE"/*.port 2>/dev/null; then
			echo "$p"
			return
		fi
	done
	die "no free port found"
}

# wait_for NAME CHECK PORT [SECONDS]: polls CHECK PORT for up to SECONDS
# (default 30) while the server NAME runs.
wait_for() {
	local i
	for i in $(seq 1 $((${4:-30} * 10))); do
		"$2" "$3" 2>/dev/null && return
		running "$1" || die "$1 exited; see $STATE/$1.log"
		sleep 0.1
	done
	die "$1 does not answer on port $3; see $STATE/$1.log"
}

# spawn NAME CMD...: starts CMD in the background, detached from our
# stdout (so that "$(... start)" returns), and records its pid.
spawn() {
	local name=$1
	shift
	# The server writes its own pid: setsid forks when it is started as a
	# process group leader (under job control), so $! may not be the server.
	rm -f "$STATE/$name.pid"
	setsid sh -c 'echo $$ >"$0"; exec "$@"' "$STATE/$name.pid" "$@" </dev/null >"$STATE/$name.log" 2>&1 &
	local i
	for i in $(seq 1 50); do
		[[ -s $STATE/$name.pid ]] && return
		sleep 0.1
	done
	die "$name did not start; see $STATE/$name.log"
}

# stop_servers NAME...: stops each server that runs (SIGTERM, SIGKILL after
# 10 s) and removes STATE.
stop_servers() {
	local name pid i
	for name in "$@"; do
		running "$name" || continue
		pid=$(cat "$STATE/$name.pid")
		kill "$pid"
		for i in $(seq 1 100); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
		log "stopped $name"
	done
	rm -rf "$STATE"
}
