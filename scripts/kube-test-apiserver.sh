#!/usr/bin/env bash
# Builds (once, cached by version) and starts (or stops) a real etcd and a
# real kube-apiserver on loopback, for the Kubernetes backend's tests. There
# is no kubelet, scheduler or controller manager: the tests bring their own
# node agent (internal/kubetest).
#
#   eval "$(scripts/kube-test-apiserver.sh start)"   # builds if needed, starts,
#                                                    # prints export PRAAS_TEST_KUBECONFIG=...
#   go test ./backend/kubernetes/...
#   scripts/kube-test-apiserver.sh stop
#   scripts/kube-test-apiserver.sh build             # only build (or find) the binaries
#   scripts/kube-test-apiserver.sh validate DIR      # kubectl apply -k DIR --dry-run=server
#
# The binaries come from the Go module proxy: a small build-only module that
# requires k8s.io/kubernetes at KUBE_VERSION, with one replace line per
# staging module (k8s.io/<name> => k8s.io/<name> v0.<minor>.<patch>), since
# k8s.io/kubernetes replaces them with ./staging paths that a module
# download does not have. etcd is built from the same module, at the version
# that k8s.io/kubernetes pins, so the two always match. The version is set
# with -ldflags -X so clients can parse the server's version. The build
# takes about 8 minutes on 2 cores; the binaries are cached in
# ${PRAAS_KUBE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/praas/kube/KUBE_VERSION}.
#
# The state directory (etcd data, certificates, kubeconfig, pids, ports,
# logs) belongs to this checkout: ${TMPDIR:-/tmp}/praas-kube-HASH, HASH
# derived from the checkout's absolute path. PRAAS_KUBE_STATE names another.
# Every message except the export lines goes to stderr.
set -euo pipefail

KUBE_VERSION=${KUBE_VERSION:-v1.36.3}

# shellcheck source=lib/servers.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/servers.sh"

STATE=${PRAAS_KUBE_STATE:-${TMPDIR:-/tmp}/praas-kube-$(checkout_id)}
CACHE=${PRAAS_KUBE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/praas/kube/$KUBE_VERSION}
# The static token the tests (and the kubeconfig) present: a member of
# system:masters. Only for this loopback test server.
TOKEN=praas-test-admin-token

log() { echo "kube-test-apiserver: $*" >&2; }
die() {
	log "$*"
	exit 1
}

# build: writes the build-only module and builds etcd and kube-apiserver
# into CACHE, unless both are there already.
build() {
	if [[ -x $CACHE/kube-apiserver && -x $CACHE/etcd ]]; then
		return
	fi
	command -v go >/dev/null || die "go is needed to build kube-apiserver"
	mkdir -p "$CACHE"
	local mod=$CACHE/build
	rm -rf "$mod"
	mkdir -p "$mod"
	log "building kube-apiserver and etcd $KUBE_VERSION in $mod (about 8 minutes on 2 cores)"
	local gomod staging minor patch
	gomod=$(cd "$mod" && GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" |
		sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$/\1/p')
	[[ -f $gomod ]] || die "could not download k8s.io/kubernetes@$KUBE_VERSION"
	# v1.36.3 -> v0.36.3 for the staging modules.
	minor=${KUBE_VERSION#v1.}
	staging=$(sed -n 's|^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/src/.*$|\1|p' "$gomod")
	[[ -n $staging ]] || die "no staging modules found in $gomod"
	{
		echo "module praas.dev/kubetestbuild"
		echo
		echo "go $(go env GOVERSION | sed 's/^go//')"
		echo
		echo "require k8s.io/kubernetes $KUBE_VERSION"
		echo
		echo "replace ("
		for m in $staging; do
			echo "	$m => $m v0.$minor"
		done
		echo ")"
	} >"$mod/go.mod"
	cat >"$mod/tools.go" <<-'EOF'
		//go:build tools

		// Package tools only names the commands this module builds.
		package tools

		import (
			_ "go.etcd.io/etcd/server/v3"
			_ "k8s.io/kubernetes/cmd/kube-apiserver"
		)
	EOF
	(cd "$mod" && GOFLAGS=-mod=mod go mod tidy >&2) || die "go mod tidy failed in $mod"
	local major=${KUBE_VERSION#v}
	major=${major%%.*}
	minor=${KUBE_VERSION#v*.}
	minor=${minor%%.*}
	local ld="-s -w -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION"
	ld+=" -X k8s.io/component-base/version.gitMajor=$major -X k8s.io/component-base/version.gitMinor=$minor"
	ld+=" -X k8s.io/component-base/version.gitTreeState=clean"
	ld+=" -X k8s.io/component-base/version.buildDate=1970-01-01T00:00:00Z"
	(cd "$mod" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "$ld" \
		-o "$CACHE/kube-apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver >&2) || die "building kube-apiserver failed"
	(cd "$mod" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w" \
		-o "$CACHE/etcd.tmp" go.etcd.io/etcd/server/v3 >&2) || die "building etcd failed"
	mv "$CACHE/kube-apiserver.tmp" "$CACHE/kube-apiserver"
	mv "$CACHE/etcd.tmp" "$CACHE/etcd"
	log "built $CACHE/kube-apiserver and $CACHE/etcd"
}

# find_kubectl: prints a kubectl: the one in PATH, else one built from the
# build module (cached beside the server binaries).
find_kubectl() {
	if command -v kubectl >/dev/null; then
		command -v kubectl
		return
	fi
	if [[ ! -x $CACHE/kubectl ]]; then
		build
		log "building kubectl $KUBE_VERSION"
		local ld="-s -w -X k8s.io/client-go/pkg/version.gitVersion=$KUBE_VERSION -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION"
		(cd "$CACHE/build" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "$ld" \
			-o "$CACHE/kubectl.tmp" k8s.io/kubernetes/cmd/kubectl >&2) || die "building kubectl failed"
		mv "$CACHE/kubectl.tmp" "$CACHE/kubectl"
	fi
	echo "$CACHE/kubectl"
}

# validate DIR: a server-side dry run of the kustomization in DIR against
# the running test API server (its namespace is created for real first:
# a dry run cannot put objects in a namespace it only pretends to create).
validate() {
	local dir=${1:?usage: validate DIR}
	[[ -f $STATE/kubeconfig ]] || die "the test API server is not running; start it first"
	local kubectl ns
	kubectl=$(find_kubectl)
	ns=$("$kubectl" kustomize "$dir" | sed -n 's/^  namespace: //p' | sort -u | head -1)
	if [[ -n $ns ]]; then
		"$kubectl" --kubeconfig "$STATE/kubeconfig" create namespace "$ns" >/dev/null 2>&1 || true
	fi
	"$kubectl" --kubeconfig "$STATE/kubeconfig" apply -k "$dir" --dry-run=server >&2
	log "$dir: server-side dry run passed"
}

etcd_healthy() (
	local line=""
	exec 3<>"/dev/tcp/127.0.0.1/$1" || return 1
	printf 'GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
	read -r -t 2 line <&3 || true
	exec 3>&-
	[[ $line == "HTTP/1."*" 200"* ]]
)

apiserver_ready() {
	curl -sfk -m 2 -H "Authorization: Bearer $TOKEN" "https://127.0.0.1:$1/readyz" >/dev/null 2>&1
}

print_env() {
	echo "export PRAAS_TEST_KUBECONFIG='$STATE/kubeconfig'"
}

start() {
	command -v curl >/dev/null || {
		apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends curl >&2
	}
	command -v openssl >/dev/null || {
		apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends openssl >&2
	}
	build
	mkdir -p "$STATE"

	if ! running etcd; then
		local cport pport
		cport=$(free_port)
		echo "$cport" >"$STATE/etcd.port"
		pport=$(free_port)
		echo "$pport" >"$STATE/etcd-peer.port"
		rm -rf "$STATE/etcd-data"
		spawn etcd "$CACHE/etcd" --data-dir "$STATE/etcd-data" \
			--listen-client-urls "http://127.0.0.1:$cport" --advertise-client-urls "http://127.0.0.1:$cport" \
			--listen-peer-urls "http://127.0.0.1:$pport" --initial-advertise-peer-urls "http://127.0.0.1:$pport" \
			--initial-cluster "default=http://127.0.0.1:$pport" --name default \
			--unsafe-no-fsync --quota-backend-bytes 2147483648
	fi
	wait_for etcd etcd_healthy "$(cat "$STATE/etcd.port")" 60

	if ! running kube-apiserver; then
		local port
		port=$(free_port)
		echo "$port" >"$STATE/kube-apiserver.port"
		mkdir -p "$STATE/certs"
		# The service-account signing key (required by the server, unused here).
		[[ -f $STATE/sa.key ]] || openssl genrsa -out "$STATE/sa.key" 2048 2>/dev/null
		echo "$TOKEN,praas-test-admin,praas-test-admin,system:masters" >"$STATE/tokens.csv"
		# No ServiceAccount admission: there is no controller manager to make
		# each namespace's default service account. RBAC is on so that the
		# manifests' roles are real; the test token is in system:masters.
		spawn kube-apiserver "$CACHE/kube-apiserver" \
			--bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$port" \
			--etcd-servers "http://127.0.0.1:$(cat "$STATE/etcd.port")" \
			--cert-dir "$STATE/certs" \
			--token-auth-file "$STATE/tokens.csv" \
			--authorization-mode RBAC \
			--service-account-issuer https://kubernetes.default.svc.cluster.local \
			--service-account-key-file "$STATE/sa.key" \
			--service-account-signing-key-file "$STATE/sa.key" \
			--service-cluster-ip-range 10.96.0.0/24 \
			--disable-admission-plugins ServiceAccount \
			--enable-priority-and-fairness=false \
			--watch-cache=true
	fi
	wait_for kube-apiserver apiserver_ready "$(cat "$STATE/kube-apiserver.port")" 60

	cat >"$STATE/kubeconfig" <<-EOF
		apiVersion: v1
		kind: Config
		clusters:
		- name: praas-test
		  cluster:
		    server: https://127.0.0.1:$(cat "$STATE/kube-apiserver.port")
		    insecure-skip-tls-verify: true
		users:
		- name: praas-test-admin
		  user:
		    token: $TOKEN
		contexts:
		- name: praas-test
		  context:
		    cluster: praas-test
		    user: praas-test-admin
		current-context: praas-test
	EOF
	log "etcd and kube-apiserver $KUBE_VERSION are up (state in $STATE)"
	print_env
}

stop() { stop_servers kube-apiserver etcd; }

case ${1:-} in
start) start ;;
stop) stop ;;
build) build ;;
validate) validate "${2:-}" ;;
*) die "usage: $0 start|stop|build|validate DIR" ;;
esac
