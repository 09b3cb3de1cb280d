#!/usr/bin/env bash
# Make the base image that knative/Dockerfile names (python:3.11-slim-bookworm) on a host that
# reaches Debian's and PyPI's package registries but no container registry, so that the one
# image builds and runs there with Podman (buildah) as it would with Docker elsewhere.
# `python -m emulators.container prepare` (make test-image) runs it only where the base image
# is neither present nor pullable; it takes about a minute.
#
#   emulators/local-base-image.sh
#   make image            # podman build, with the flags emulators/container.py finds this host needs
#
# Not the official image, a stand-in: Debian bookworm (debootstrap --variant=minbase) with
# Python 3.11 from Debian at /usr/local/bin/python, as the official image has it, and this
# host's CA bundle, so that pip inside a build reaches the package registry as the host does.
# It installs podman, runc and debootstrap from Debian's packages where they are missing.
# ROOT (default /var/tmp/bookworm-python-root) is where the root file system is made.
set -euo pipefail
BASE=docker.io/library/python:3.11-slim-bookworm
ROOT=${ROOT:-/var/tmp/bookworm-python-root}
need=()
for exe in podman runc debootstrap; do command -v "$exe" >/dev/null || need+=("$exe"); done
if [ ${#need[@]} -gt 0 ]; then
  apt-get install -y -qq "${need[@]}" >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq "${need[@]}"; }
fi
if podman image exists "$BASE"; then echo "$BASE is here already"; exit 0; fi
if [ ! -x "$ROOT/usr/bin/python3.11" ]; then
  echo "debootstrap bookworm into $ROOT ..."
  debootstrap --variant=minbase --include=python3.11,python3.11-venv,python3-pip,ca-certificates \
    bookworm "$ROOT" >/dev/null
fi
cp /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/ca-certificates.crt"
ln -sf /usr/bin/python3.11 "$ROOT/usr/local/bin/python"
ln -sf /usr/bin/python3.11 "$ROOT/usr/local/bin/python3"
rm -f "$ROOT"/var/cache/apt/archives/*.deb
tar -C "$ROOT" -c . | podman import \
  --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
  --change 'CMD ["python3"]' - "$BASE" >/dev/null
echo "made $BASE"
