#!/usr/bin/env bash
# Cold pull vs warm ensure of a two-layer image (busybox-static, then a copy
# of /usr/lib/python3.11: about 56 MB, 1,500 files) from a local
# docker-registry. Needs docker-registry, umoci, skopeo, busybox-static
# (integration/install-deps.sh). Prints what docs/benchmarks.md records.
set -euo pipefail
cd "$(dirname "$0")/../.."
target=${CARGO_TARGET_DIR:-target}
cargo build --release -q -p corral-images --example pull_timing
work=$(mktemp -d)
trap 'kill "$registry_pid" 2>/dev/null || true; rm -rf "$work"' EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
printf 'version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s/storage\nhttp:\n  addr: 127.0.0.1:%s\n' \
  "$work" "$port" > "$work/config.yml"
docker-registry serve "$work/config.yml" >"$work/registry.log" 2>&1 &
registry_pid=$!

umoci init --layout "$work/oci"
umoci new --image "$work/oci:bench"
umoci config --image "$work/oci:bench" --os linux --architecture amd64 --config.env PATH=/bin
umoci unpack --rootless --image "$work/oci:bench" "$work/bundle"
mkdir -p "$work/bundle/rootfs/bin"
cp /bin/busybox "$work/bundle/rootfs/bin/busybox"
for applet in sh ls cat echo env; do ln -s busybox "$work/bundle/rootfs/bin/$applet"; done
umoci repack --refresh-bundle --image "$work/oci:bench" "$work/bundle"
mkdir -p "$work/bundle/rootfs/usr/lib"
cp -a /usr/lib/python3.11 "$work/bundle/rootfs/usr/lib/"
umoci repack --refresh-bundle --image "$work/oci:bench" "$work/bundle"
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/v2/" >/dev/null && break; sleep 0.1; done
skopeo copy --quiet --dest-tls-verify=false "oci:$work/oci:bench" "docker://127.0.0.1:$port/bench/python:1"

"$target/release/examples/pull_timing" "docker://127.0.0.1:$port/bench/python:1" "$work/cache" 20

# Reference, same image and registry: skopeo pull into an OCI layout, then
# umoci's rootless unpack (the usual tools for the same job).
start=$(date +%s%N)
skopeo copy --quiet --src-tls-verify=false "docker://127.0.0.1:$port/bench/python:1" "oci:$work/ref:bench"
umoci unpack --rootless --image "$work/ref:bench" "$work/ref-bundle" >/dev/null
end=$(date +%s%N)
echo "reference skopeo copy + umoci unpack --rootless: $(( (end - start) / 1000000 )) ms"
