#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Static checks of the project's code: rustfmt, the driver contains no `unsafe`, clippy on
# the kernel crate and the modules, checkpatch on the C helpers. Any finding fails.

. "$(dirname "$0")/lib.sh"
KDIR=$(cat "$CACHE/kdir.path")
fail=0

stage check-unsafe "no unsafe in drivers/"
if grep -rnw --include='*.rs' unsafe "$TOP/drivers" | grep -v '^\S*:\s*//'; then
	echo "drivers/ must not contain unsafe" >&2
	fail=1
fi

stage check-fmt "rustfmt"
files=$(cd "$TOP" && find rust drivers samples -name '*.rs')
if ! (cd "$TOP" && rustfmt --edition 2021 --check --config-path "$KDIR/.rustfmt.toml" $files >/dev/null); then
	(cd "$TOP" && rustfmt --edition 2021 --check --config-path "$KDIR/.rustfmt.toml" $files | head -40) >&2
	echo "rustfmt: run 'rustfmt --edition 2021 --config-path $KDIR/.rustfmt.toml <files>'" >&2
	fail=1
fi

stage check-checkpatch "checkpatch --strict on the C helpers"
for f in "$TOP"/rust/helpers/*.c; do
	if ! perl "$KDIR/scripts/checkpatch.pl" --no-tree --strict --quiet -f "$f"; then
		fail=1
	fi
done

stage check-clippy "clippy on the kernel crate and the modules"
log=$(mktemp)
make -C "$KDIR" -j"$(($(nproc) + 1))" -s CLIPPY=1 RUST_LIB_SRC="$(RUST_SRC_DIR)" \
	LIBCLANG_PATH="$LIBCLANG_DIR" BINDGEN="$BINDGEN" rust/ M="$TOP" modules >"$log" 2>&1 || true
# The overlay's files and the project's modules must be warning-free.
if grep -E '^(warning|error)' -A6 "$log" | grep -E -- '--> (rust/kernel/(virtio|hvc|chrdev|device_class|ida|workqueue_sync)|drivers/char/virtio_console_rs|samples/rust/rust_virtio_rng)' >/dev/null; then
	grep -E '^(warning|error)' -A8 "$log" | head -80 >&2
	fail=1
fi
rm -f "$log"
stage_end
if [ "$fail" -ne 0 ]; then
	echo "checks: FAILED" >&2
	exit 1
fi
echo "checks: rustfmt, no-unsafe, checkpatch and clippy clean" >&2
