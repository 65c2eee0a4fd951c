#!/usr/bin/env bash
# `make image`: the CPU container image (resnet-lab:cpu) from the bento, with docker where a docker engine runs,
# else podman. The bento's base image (python:3.11-slim, from bentofile.yaml) is pulled where a registry answers;
# where none does, it is built from Debian's own packages (mmdebstrap: Debian bookworm, whose Python is 3.11) and
# imported under that name, so the build pulls nothing. Packages still come from Debian's and PyPI's mirrors.
#   IMAGE=resnet-lab:cpu  the tag to build;  ENGINE=docker|podman  to choose
set -euo pipefail
cd "$(dirname "$0")/../.."
IMAGE=${IMAGE:-resnet-lab:cpu}
BENTOML=${BENTOML:-.venv/bin/bentoml}
export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/deploy/image/containers.conf}
if [ -z "${ENGINE:-}" ]; then
  if command -v docker >/dev/null && docker info >/dev/null 2>&1; then ENGINE=docker
  elif command -v podman >/dev/null; then ENGINE=podman
  else echo "error: no container engine: start docker, or install podman (apt-get install podman runc)" >&2; exit 2
  fi
fi
BASE=$(sed -n 's/^  python_version: "\([0-9.]*\)".*/python:\1-slim/p' bentofile.yaml)
if ! $ENGINE image inspect "$BASE" >/dev/null 2>&1 && ! timeout 60 $ENGINE pull -q "$BASE" >/dev/null 2>&1; then
  command -v mmdebstrap >/dev/null || { echo "error: no registry answers for $BASE: install mmdebstrap to build it" >&2; exit 2; }
  echo "building $BASE from Debian bookworm's packages (no registry answers)"
  # What the bento's Dockerfile expects of python:3.11-slim: Python 3.11 with pip (free to install packages), bash,
  # apt, certificates. The builds inside trust what this machine trusts (its CA bundle: behind a TLS-inspecting
  # proxy, pip and uv reach PyPI only so).
  BUNDLE=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
  ROOTFS=$(mktemp --suffix=.tar)
  trap 'rm -f "$ROOTFS"' EXIT
  mmdebstrap --variant=apt --include=python3.11,python3-pip,python3-venv,ca-certificates,bash \
    --customize-hook='rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED' \
    --customize-hook='ln -sf python3 "$1"/usr/bin/python' \
    --customize-hook='mkdir -p "$1"/usr/local/share/build-host' \
    --customize-hook="copy-in $BUNDLE /usr/local/share/build-host" \
    bookworm "$ROOTFS" http://deb.debian.org/debian
  $ENGINE import --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' \
    --change "ENV SSL_CERT_FILE=/usr/local/share/build-host/$(basename "$BUNDLE")" \
    --change "ENV PIP_CERT=/usr/local/share/build-host/$(basename "$BUNDLE")" \
    --change 'ENV UV_NATIVE_TLS=1' "$ROOTFS" "$BASE" >/dev/null
fi
TAG=$($BENTOML build --output tag | tail -n 1 | sed 's/^__tag__://')
# BentoML reads its copy of deploy/bento/Dockerfile.j2 from a temporary build context and refuses a template outside
# the working directory: the context goes under build/ (git-ignored).
mkdir -p build/containerize
TMPDIR=$PWD/build/containerize $BENTOML containerize "$TAG" --backend "$ENGINE" --image-tag "$IMAGE" --opt network=host
echo "built $IMAGE from $TAG ($ENGINE)"
