#!/usr/bin/env bash
# Installs every Debian package the build, the tests, the benchmarks and the demo need.
# Idempotent: packages already present are skipped; apt-get update runs only when something
# is missing. Needs root (or sudo). Nothing is downloaded outside Debian's archive.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config git
  openssl procps   # the TLS test makes certificates; local-cluster.sh and tests use pgrep
  libtorch-dev libgloo-dev   # libgloo-dev: the headers c10d's ProcessGroupGloo.hpp includes
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc
  libabsl-dev
  libopencv-dev
  prometheus-cpp-dev
  libopenblas0-pthread   # fast BLAS for LibTorch (Debian default libblas3 is the reference one)
  libgtest-dev libgmock-dev libbenchmark-dev
  libsentencepiece-dev
  libsqlite3-dev
  libyaml-cpp-dev
  libspdlog-dev libfmt-dev
  nlohmann-json3-dev
  # Golden-file generators only (independent reference forward, PIL bicubic resize).
  python3-torch python3-numpy python3-pil
  # deploy/ checks: kubectl kustomize is on these machines (see below), promtool and a real Prometheus.
  prometheus python3-yaml
)

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
# kubectl (for `kubectl kustomize` in the deploy test): present on these machines; elsewhere from
# the archive configured (the `kubectl` package), else Debian's kubernetes-client.
install_kubectl() {
  command -v kubectl >/dev/null 2>&1 && return 0
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends kubectl ||
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends kubernetes-client
}

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
  if ! command -v kubectl >/dev/null 2>&1; then $SUDO apt-get update -q; install_kubectl; fi
  exit 0
fi

echo "install-deps: installing ${#missing[@]} missing packages: ${missing[*]}"
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
install_kubectl
echo "install-deps: done"
