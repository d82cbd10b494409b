#!/usr/bin/env bash
# Idempotent Docker setup for serve-gateway (CI on a fresh Debian bookworm machine, and developers).
#
#   1. install docker.io when the daemon binary is missing, and Compose (docker-compose) when
#      neither `docker compose` nor `docker-compose` works;
#   2. start dockerd in the background when `docker info` fails (bounded wait);
#   3. build the base image serve-gateway-base:bookworm with debootstrap when it does not exist
#      (no registry is reachable here, so `FROM python:3.12-slim` cannot be pulled);
#   4. build serve-gateway-worker:dev (examples/Dockerfile) and serve-gateway:dev (Dockerfile).
#
# Every step is skipped when its result already exists, so a warm run takes seconds.
# Environment overrides:
#   SGW_BASE_IMAGE     base image for both builds (default: python:3.12-slim when present locally,
#                      else serve-gateway-base:bookworm, built here)
#   SGW_DEBIAN_MIRROR  mirror for debootstrap (default: the host's apt mirror)
#   SGW_DOCKERD_LOG    dockerd log file when this script starts it (default /var/log/dockerd.log)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEBOOTSTRAP_BASE=serve-gateway-base:bookworm
DOCKERD_LOG=${SGW_DOCKERD_LOG:-/var/log/dockerd.log}
DOCKERD_WAIT_S=60
T0=$SECONDS

log() { printf '[docker-setup %3ss] %s\n' "$((SECONDS - T0))" "$*"; }
die() { log "ERROR: $*" >&2; exit 1; }

# Root is needed for apt, dockerd and debootstrap; developers who are not root go through sudo.
SUDO=()
if [ "$(id -u)" != 0 ]; then SUDO=(sudo); fi

APT_UPDATED=0
apt_install() {
    log "apt-get install $*"
    if [ "$APT_UPDATED" = 0 ]; then
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        APT_UPDATED=1
    fi
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

have_docker() {
    command -v docker >/dev/null 2>&1 && { command -v dockerd >/dev/null 2>&1 || [ -x /usr/sbin/dockerd ]; }
}

ensure_docker_installed() {
    if have_docker; then
        log "dockerd present: $(command -v dockerd || echo /usr/sbin/dockerd)"
        return
    fi
    apt_install docker.io
    have_docker || die "docker.io installed but docker/dockerd still missing"
}

# Compose runs docker-compose.yml (tests/docker/test_compose.py): the v2 plugin when present, else
# Debian's docker-compose (v1; bookworm ships no docker-compose-plugin).
ensure_compose_installed() {
    if docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null 2>&1; then
        log "compose present"
        return
    fi
    apt_install docker-compose
    command -v docker-compose >/dev/null 2>&1 || die "docker-compose installed but still missing"
}

ensure_daemon_running() {
    if docker info >/dev/null 2>&1; then
        log "docker daemon reachable"
        return
    fi
    log "docker daemon not reachable: starting dockerd (log: $DOCKERD_LOG)"
    local dockerd
    dockerd=$(command -v dockerd || echo /usr/sbin/dockerd)
    # setsid + nohup: the daemon must outlive this script and the CI step that ran it.
    "${SUDO[@]}" sh -c "setsid nohup '$dockerd' >>'$DOCKERD_LOG' 2>&1 </dev/null &"
    local deadline=$((SECONDS + DOCKERD_WAIT_S))
    until docker info >/dev/null 2>&1; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            "${SUDO[@]}" tail -n 30 "$DOCKERD_LOG" >&2 || true
            die "dockerd did not answer within ${DOCKERD_WAIT_S}s"
        fi
        sleep 0.5
    done
    log "dockerd up"
}

image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

# The Debian mirror the host's apt uses (deb822 .sources first, then one-line sources.list).
host_debian_mirror() {
    local uri=""
    local f
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        # Stanzas are separated by blank lines; pick the URIs of one whose Suites list "bookworm".
        uri=$(awk '
            /^[[:space:]]*#/ { next }
            /^[[:space:]]*$/ { if (suite && uris) { print uris; exit } suite = 0; uris = ""; next }
            /^URIs:/ { uris = $2 }
            /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == "bookworm") suite = 1 }
            END { if (suite && uris) print uris }' "$f" | head -n 1)
        [ -n "$uri" ] && break
    done
    if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
        uri=$(awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i !~ /^\[/ && $i ~ /:\/\//) {
                  if ($(i + 1) == "bookworm") { print $i; exit } } }' /etc/apt/sources.list)
    fi
    echo "${uri:-http://deb.debian.org/debian}"
}

build_debootstrap_base() {
    command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || apt_install debootstrap
    local mirror=${SGW_DEBIAN_MIRROR:-$(host_debian_mirror)}
    local dir
    dir=$(mktemp -d /tmp/sgw-rootfs.XXXXXX)
    # The rootfs is root-owned; remove it whatever happens.
    trap '"${SUDO[@]}" rm -rf "'"$dir"'"' EXIT
    log "debootstrap bookworm from $mirror into $dir (a few minutes)"
    local keyring=()
    if [ -f /usr/share/keyrings/debian-archive-keyring.gpg ]; then
        keyring=(--keyring=/usr/share/keyrings/debian-archive-keyring.gpg)
    fi
    "${SUDO[@]}" debootstrap --variant=minbase "${keyring[@]}" \
        --include=python3,python3-venv,python3-pip,ca-certificates \
        bookworm "$dir" "$mirror" >"$dir.log" 2>&1 \
        || { tail -n 30 "$dir.log" >&2; die "debootstrap failed (full log: $dir.log)"; }
    rm -f "$dir.log"
    # pip inside `docker build` verifies HTTPS against this bundle: use the host's, which holds
    # any CA the host needs to reach PyPI. The host's pip.conf is NOT copied: here it only points
    # at local wheel directories that do not exist inside the image; PyPI itself is reachable.
    if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
        "${SUDO[@]}" cp /etc/ssl/certs/ca-certificates.crt "$dir/etc/ssl/certs/ca-certificates.crt"
    fi
    # Smaller image: no package cache, no apt lists.
    "${SUDO[@]}" rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/* "$dir"/tmp/*
    log "docker import $DEBOOTSTRAP_BASE"
    "${SUDO[@]}" tar -C "$dir" -c . | docker import \
        --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$DEBOOTSTRAP_BASE" >/dev/null
    "${SUDO[@]}" rm -rf "$dir"
    trap - EXIT
}

choose_base_image() {
    if [ -n "${SGW_BASE_IMAGE:-}" ]; then
        BASE_IMAGE=$SGW_BASE_IMAGE
    elif image_exists python:3.12-slim; then
        BASE_IMAGE=python:3.12-slim
    else
        BASE_IMAGE=$DEBOOTSTRAP_BASE
        if image_exists "$DEBOOTSTRAP_BASE"; then
            log "base image $DEBOOTSTRAP_BASE cached"
        else
            build_debootstrap_base
        fi
    fi
    image_exists "$BASE_IMAGE" || die "base image $BASE_IMAGE not found"
    log "base image: $BASE_IMAGE"
}

build_image() {
    local tag=$1 dockerfile=$2
    log "docker build $tag (-f $dockerfile)"
    # The legacy builder works with every CLI/daemon pair here; BuildKit needs the buildx plugin,
    # which Debian's docker.io does not ship with CLI >= 23.
    local buildkit=0
    if docker buildx version >/dev/null 2>&1; then buildkit=1; fi
    local build_log
    build_log=$(mktemp /tmp/sgw-build.XXXXXX)
    if ! DOCKER_BUILDKIT=$buildkit docker build -t "$tag" -f "$ROOT/$dockerfile" \
            --build-arg "BASE_IMAGE=$BASE_IMAGE" "$ROOT" >"$build_log" 2>&1; then
        tail -n 40 "$build_log" >&2
        die "docker build $tag failed (full log: $build_log)"
    fi
    local steps cached
    steps=$(grep -c '^Step ' "$build_log" || true)
    cached=$(grep -c 'Using cache' "$build_log" || true)
    log "built $tag: $(docker image inspect -f '{{.Id}}' "$tag" | cut -c8-19) ($cached of $steps steps cached)"
    rm -f "$build_log"
}

ensure_docker_installed
ensure_compose_installed
ensure_daemon_running
choose_base_image
build_image serve-gateway-worker:dev examples/Dockerfile
build_image serve-gateway:dev Dockerfile
# Superseded builds of these two images (untagged by the rebuild); other images are untouched.
docker image prune -f --filter label=serve-gateway.build >/dev/null
log "done"
