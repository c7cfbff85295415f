#!/usr/bin/env bash
# One entry point for people and CI: installs the Debian packages that are
# missing, then configures, builds and runs one CMake workflow preset.
#
#   scripts/dev.sh example   build and run the storefront example
#   scripts/dev.sh test      build and run the whole test suite (ctest)
#   scripts/dev.sh tsan      the tests under ThreadSanitizer
#   scripts/dev.sh asan      the tests under AddressSanitizer + UBSan
#   scripts/dev.sh bench     build the benchmarks (Release) and run them
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(cmake ninja-build g++ pkg-config libabsl-dev libfmt-dev catch2 libbenchmark-dev)

# install_missing_packages [apt-get options] -- package...
install_missing_packages() {
  local options=()
  while [ "$1" != -- ]; do options+=("$1"); shift; done
  shift
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "Installing Debian packages: ${missing[*]}"
  local sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${options[@]}" "${missing[@]}"
}

target=${1:-test}
case "$target" in
  example|test|tsan|asan) ;;
  bench) ;;
  *) echo "usage: $0 example|test|tsan|asan|bench" >&2; exit 2 ;;
esac
install_missing_packages -- "${packages[@]}"
# promtool (Debian package prometheus) checks the metrics text in ctest
# metrics.promtool; the example does not run the tests, so it goes without.
# Without Recommends: promtool needs none of them (node-exporter etc.).
# Note: on a machine running systemd, the package also enables a Prometheus
# server on :9090; `sudo systemctl disable --now prometheus` turns it off.
case "$target" in
  test|tsan|asan) install_missing_packages --no-install-recommends -- prometheus ;;
esac
# The NATS bridge's tests start a real nats-server on loopback.
case "$target" in
  test|tsan|asan) install_missing_packages -- nats-server libnats-dev ;;
esac
if [ "$target" = example ]; then
  cmake --workflow --preset example-build
  exec ./build/dev/examples/storefront
fi
if [ "$target" = bench ]; then
  cmake --workflow --preset bench-build
  shift || true
  exec ./build/bench/bench/fnbus_bench "$@"
fi
cmake --workflow --preset "$target"
