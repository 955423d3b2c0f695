# SPDX-License-Identifier: GPL-2.0
# Shared helpers for the project's scripts: cache location, stage timing,
# clear failure messages.  Sourced, never executed.

set -euo pipefail

TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${VCON_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/virtio-console-rs}
OUT=${VCON_OUT:-$TOP/out}
KVER=7.3
mkdir -p "$CACHE" "$OUT"

_stage_name=""
_stage_start=0

# stage NAME: announce a stage and remember when it began.
stage() {
	stage_end
	_stage_name=$1
	_stage_start=$(date +%s)
	printf '==> [%s] %s\n' "$_stage_name" "${2:-}" >&2
}

# stage_end: print the elapsed time of the running stage, if any.
stage_end() {
	if [ -n "$_stage_name" ]; then
		printf '<== [%s] done in %ss\n' "$_stage_name" $(( $(date +%s) - _stage_start )) >&2
		_stage_name=""
	fi
}

die() {
	printf 'error: %s\n' "$*" >&2
	exit 1
}

need() {
	command -v "$1" >/dev/null 2>&1 || die "missing '$1': $2"
}

# retry N CMD...: run CMD up to N times, pausing between attempts.
retry() {
	local n=$1 i
	shift
	for ((i = 1; i <= n; i++)); do
		"$@" && return 0
		echo "attempt $i/$n failed: $*" >&2
		sleep $((i * 2))
	done
	return 1
}

# Debian mirror from the machine's own apt configuration (never hard-coded).
debian_mirror() {
	grep -hE '^\s*(URIs:|deb )' /etc/apt/sources.list /etc/apt/sources.list.d/*.sources \
		/etc/apt/sources.list.d/*.list 2>/dev/null |
		grep -oE 'https?://[^ ]+/debian/?' | head -n1 || true
}

# The tool paths the kernel build needs, once set-up has run.
RUST_SRC_DIR() { cat "$CACHE/rust-src.path"; }
LIBCLANG_DIR=$(cat "$CACHE/libclang.path" 2>/dev/null || true)
BINDGEN=$CACHE/bindgen/bin/bindgen
