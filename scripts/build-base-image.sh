#!/usr/bin/env bash
# Build the base image the Dockerfile templates use where no container registry is reachable.
#
# A Debian bookworm root (Python 3.11) made with debootstrap and imported into the local image
# store as local/python:3.11-bookworm, the same Python line as python:3.11-slim. Idempotent:
# an image already in the store is kept. Needs root, debootstrap and a running Docker engine.
#
# Environment:
#   MLOPS_BASE_IMAGE       tag to build (default local/python:3.11-bookworm)
#   MLOPS_BASE_IMAGE_TAR   a `docker save` archive (.tar or .tar.gz): loaded if it exists
#                          instead of running debootstrap (2-3 s instead of ~50 s)
#   MLOPS_BASE_IMAGE_SAVE  set to 1 to write the image to $MLOPS_BASE_IMAGE_TAR after a build,
#                          so the next wipe costs a load, not a debootstrap. Never commit it.
#   DEBIAN_MIRROR          mirror for debootstrap (default: the host's apt source)
#   DOCKER                 docker CLI to use (default /usr/bin/docker: a newer CLI in
#                          /usr/local/bin may shadow it and its BuildKit default fails here)
set -euo pipefail

IMAGE="${MLOPS_BASE_IMAGE:-local/python:3.11-bookworm}"
TAR="${MLOPS_BASE_IMAGE_TAR:-}"
SAVE="${MLOPS_BASE_IMAGE_SAVE:-0}"
DOCKER="${DOCKER:-/usr/bin/docker}"
[ -x "$DOCKER" ] || DOCKER=docker

log() { echo "build-base-image: $*" >&2; }

if ! "$DOCKER" info >/dev/null 2>&1; then
    log "no Docker engine reachable; start dockerd first (see TOOLING.md / README)"
    exit 2
fi

if "$DOCKER" image inspect "$IMAGE" >/dev/null 2>&1; then
    log "$IMAGE already present"
    if [ "$SAVE" = 1 ] && [ -n "$TAR" ] && [ ! -e "$TAR" ]; then
        "$DOCKER" save "$IMAGE" | gzip -1 > "$TAR"
        log "saved $IMAGE to $TAR"
    fi
    exit 0
fi

if [ -n "$TAR" ] && [ -f "$TAR" ]; then
    log "loading $IMAGE from $TAR"
    "$DOCKER" load -i "$TAR" >/dev/null
    if "$DOCKER" image inspect "$IMAGE" >/dev/null 2>&1; then
        exit 0
    fi
    log "$TAR did not hold $IMAGE; building it"
fi

if [ "$(id -u)" != 0 ]; then
    log "debootstrap needs root; run as root or pass MLOPS_BASE_IMAGE_TAR"
    exit 2
fi
command -v debootstrap >/dev/null || { log "install debootstrap (apt-get install -y debootstrap)"; exit 2; }

MIRROR="${DEBIAN_MIRROR:-}"
if [ -z "$MIRROR" ] && [ -f /etc/apt/sources.list.d/debian.sources ]; then
    MIRROR=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources)
fi
MIRROR="${MIRROR:-http://deb.debian.org/debian}"

ROOT=$(mktemp -d /tmp/mlops-base-root.XXXXXX)
trap 'rm -rf "$ROOT"' EXIT

log "debootstrap bookworm into $ROOT from $MIRROR (about a minute)"
debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
    bookworm "$ROOT" "$MIRROR" >/dev/null
# pip inside a build trusts only what the image trusts: carry the host's extra CAs (a proxy's).
cp /usr/local/share/ca-certificates/*.crt "$ROOT/usr/local/share/ca-certificates/" 2>/dev/null || true
chroot "$ROOT" update-ca-certificates >/dev/null
chroot "$ROOT" apt-get clean
rm -rf "$ROOT/var/lib/apt/lists/"*

tar -C "$ROOT" -c . | "$DOCKER" import \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'ENV LANG=C.UTF-8' \
    -c 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
    -c 'ENV REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt' \
    -c 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
    -c 'CMD ["python3"]' \
    - "$IMAGE" >/dev/null
log "built $IMAGE"

if [ "$SAVE" = 1 ] && [ -n "$TAR" ]; then
    "$DOCKER" save "$IMAGE" | gzip -1 > "$TAR"
    log "saved $IMAGE to $TAR"
fi
