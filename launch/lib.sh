# shellcheck shell=bash
# Shared helpers for launch/*.sh. Sourced, not executed; expects `set -euo pipefail` and the
# repository root as the current directory (the callers cd there first).
#
# Environment (all optional):
#   EXPERTMESH_CUDA=AUTO|ON|OFF   CMake option for the CUDA kernels (default AUTO: when nvcc exists)
#   EXPERTMESH_CMAKE_ARGS="..."   extra arguments for the CMake configure step (word-split)
#   EXPERTMESH_SHARED_DIR=DIR     the shared/ folder with golden data (default: ../shared)
#   EXPERTMESH_JOBS=N             build parallelism (default: nproc)

# Debian 12 packages the build, the tests and the scripts need.
#   clang + libclang-rt-dev: the libFuzzer target (libclang-rt-dev holds the fuzzer runtime and is
#   only a recommendation of clang); librsvg2-bin: rsvg-convert for sweep plots; zlib1g-dev: the
#   plot test decodes the PNG it renders; curl: quickstart's serve request.
EM_PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config
  libopenmpi-dev openmpi-bin libhwloc-dev hwloc
  libprotobuf-dev protobuf-compiler
  libgtest-dev libgmock-dev libbenchmark-dev
  libcpp-httplib-dev nlohmann-json3-dev libfmt-dev libpcre2-dev
  clang libclang-rt-dev librsvg2-bin zlib1g-dev curl
)
# Packages needed only when their command is missing: node + npm run the serve test that drives
# the server with the official `openai` npm package (tests/server/e2e/openai_client). Checked by
# command, not by package: a Node.js from another source (e.g. NodeSource's nodejs, which bundles
# npm and conflicts with Debian's npm package) already provides them.
EM_COMMAND_PACKAGES=(node:nodejs npm:npm)

em_log() { printf '[%s] %s\n' "$(basename "$0")" "$*" >&2; }

em_is_root() { [[ "$(id -u)" -eq 0 ]]; }

# Installs the packages of EM_PACKAGES that dpkg does not list as installed. As root: apt-get
# update + install (only when something is missing). Otherwise: prints the exact command and
# returns 1. On a system without dpkg it warns and carries on (CMake will name what is missing).
em_install_deps() {
  if ! command -v dpkg-query >/dev/null 2>&1; then
    em_log "dpkg-query not found: not a Debian system, skipping the package check"
    return 0
  fi
  local missing=() p
  for p in "${EM_PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
      missing+=("$p")
    fi
  done
  for p in "${EM_COMMAND_PACKAGES[@]}"; do
    command -v "${p%%:*}" >/dev/null 2>&1 || missing+=("${p#*:}")
  done
  if ((${#missing[@]} == 0)); then
    return 0
  fi
  if ! em_is_root; then
    em_log "missing Debian packages: ${missing[*]}"
    em_log "install them with:"
    printf '  sudo apt-get update && sudo apt-get install -y --no-install-recommends %s\n' "${missing[*]}" >&2
    return 1
  fi
  em_log "installing: ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
}

em_jobs() { echo "${EXPERTMESH_JOBS:-$(nproc 2>/dev/null || echo 2)}"; }

# em_configure DIR [cmake args...]: configures DIR with Ninja when available (an existing build
# directory keeps the generator it was made with).
em_configure() {
  local dir="$1"
  shift
  local args=(-S . -B "$dir")
  if [[ ! -f "$dir/CMakeCache.txt" ]] && command -v ninja >/dev/null 2>&1; then
    args+=(-G Ninja)
  fi
  if [[ -n "${EXPERTMESH_SHARED_DIR:-}" ]]; then
    args+=("-DEXPERTMESH_SHARED_DIR=${EXPERTMESH_SHARED_DIR}")
  fi
  # shellcheck disable=SC2206  # word splitting of EXPERTMESH_CMAKE_ARGS is intended
  local extra=(${EXPERTMESH_CMAKE_ARGS:-})
  cmake "${args[@]}" "$@" "${extra[@]}"
}

# em_build_main [targets...]: configures and builds build/ (all targets when none are given).
em_build_main() {
  em_configure build "-DEXPERTMESH_CUDA=${EXPERTMESH_CUDA:-AUTO}" || return 1
  local targets=()
  local t
  for t in "$@"; do targets+=(--target "$t"); done
  cmake --build build -j "$(em_jobs)" "${targets[@]}" || return 1
}

# The mpirun command line as an array in EM_MPIRUN: oversubscription allowed (more ranks than
# cores), --allow-run-as-root when root (containers and CI run as root).
em_mpirun_init() {
  EM_MPIRUN=(mpirun --oversubscribe)
  if em_is_root; then EM_MPIRUN+=(--allow-run-as-root); fi
  # Shared-memory transport without CMA single-copy: CMA needs ptrace rights that containers often
  # lack ("vader ... process_vm_readv failed"); the copy-in/copy-out path always works.
  export OMPI_MCA_btl_vader_single_copy_mechanism="${OMPI_MCA_btl_vader_single_copy_mechanism:-none}"
}
