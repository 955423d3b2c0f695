#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Static checks of the project's code: rustfmt, the driver contains no `unsafe`, clippy on
# the kernel crate and the modules, checkpatch on the C helpers, and the host tools'
# (tools/testing/*) unit tests, rustfmt and clippy. Any finding fails.

. "$(dirname "$0")/lib.sh"
KDIR=$(cat "$CACHE/kdir.path")
fail=0
# The clippy and rustdoc stages rebuild the kernel crate in the shared tree: hold its lock,
# as build-kernel.sh does, so that no other checkout builds in it meanwhile.
exec 9>"$KDIR.lock"
flock 9

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

stage check-checkpatch "checkpatch --strict on the C helpers and the test device"
for f in "$TOP"/rust/helpers/*.c "$TOP"/drivers/virtio/*.c "$TOP"/include/linux/*.h; do
	if ! perl "$KDIR/scripts/checkpatch.pl" --no-tree --strict --quiet -f "$f"; then
		fail=1
	fi
done

stage check-clippy "clippy on the kernel-crate overlay and the modules"
# Keyed by the sources' content: a clean result is not recomputed (clippy rebuilds the crate).
sum=$(cd "$TOP" && cat $(find rust drivers samples scripts/series -type f \( -name '*.rs' -o -name '*.c' -o -name '*.txt' \) | sort) | sha256sum | cut -c1-16)
if [ "$(cat "$CACHE/clippy-clean" 2>/dev/null)" = "$sum" ]; then
	echo "clippy: sources unchanged since the last clean run" >&2
else
	log=$(mktemp)
	bash "$TOP/scripts/overlay.sh" "$KDIR"
	touch "$KDIR"/rust/kernel/{virtio,hvc,chrdev,device_class,ida,kmsg_dump}.rs
	find "$TOP/drivers" "$TOP/samples" -name '*.rs' -exec touch {} +
	KM=(make -C "$KDIR" -j"$(($(nproc) + 1))" -s CLIPPY=1 RUST_LIB_SRC="$(RUST_SRC_DIR)"
		LIBCLANG_PATH="$LIBCLANG_DIR" BINDGEN="$BINDGEN")
	# clippy-driver runs without MIR optimisations, so the modules call small kernel-crate
	# functions that an -O2 build inlines across the crate and vmlinux does not export:
	# modpost may only warn here (linking is `make build`'s job; this stage is for lints).
	{ "${KM[@]}" prepare && "${KM[@]}" M="$TOP" MO="$OUT/modbuild" CONFIG_VIRTIO_CONSOLE_RS=m CONFIG_SAMPLE_RUST_VIRTIO_RNG=m KBUILD_MODPOST_WARN=1 modules; } \
		>"$log" 2>&1 || fail=1
	if grep -qE '^(warning|error)' "$log"; then
		grep -E '^(warning|error)' -A8 "$log" | head -80 >&2
		fail=1
	elif [ "$fail" -ne 0 ]; then
		tail -30 "$log" >&2
	fi
	[ "$fail" -ne 0 ] || echo "$sum" >"$CACHE/clippy-clean"
	rm -f "$log"
fi

stage check-rustdoc "rustdoc on the kernel crate with the overlay"
# Keyed by the overlay's content, like clippy.
dsum=$(cd "$TOP" && cat $(find rust -type f | sort) | sha256sum | cut -c1-16)
if [ "$(cat "$CACHE/rustdoc-clean" 2>/dev/null)" = "$dsum" ]; then
	echo "rustdoc: overlay unchanged since the last clean run" >&2
else
	log=$(mktemp)
	bash "$TOP/scripts/overlay.sh" "$KDIR"
	dfail=0
	make -C "$KDIR" -j"$(($(nproc) + 1))" -s rustdoc RUST_LIB_SRC="$(RUST_SRC_DIR)" \
		LIBCLANG_PATH="$LIBCLANG_DIR" BINDGEN="$BINDGEN" >"$log" 2>&1 || dfail=1
	if [ "$dfail" -ne 0 ] || grep -qE '^(warning|error)' "$log"; then
		grep -E '^(warning|error)' -A8 "$log" | head -60 >&2
		[ "$dfail" -eq 0 ] || tail -20 "$log" >&2
		fail=1
	else
		echo "$dsum" >"$CACHE/rustdoc-clean"
	fi
	rm -f "$log"
fi

stage check-host-tools "host tools: cargo test, cargo fmt --check, cargo clippy -D warnings"
for crate in "$TOP"/tools/testing/vcon-harness "$TOP"/tools/testing/vcon-tcg-profile; do
	name=${crate##*/}
	if ! (cd "$crate" && cargo fmt --check >/dev/null); then
		(cd "$crate" && cargo fmt --check | head -40) >&2
		echo "$name: rustfmt: run 'cargo fmt' in $crate" >&2
		fail=1
	fi
	if ! (cd "$crate" && cargo clippy -q --all-targets -- -D warnings); then
		echo "$name: clippy found the above" >&2
		fail=1
	fi
	log=$(mktemp)
	if ! (cd "$crate" && cargo test -q --all-targets) >"$log" 2>&1; then
		tail -40 "$log" >&2
		echo "$name: cargo test failed" >&2
		fail=1
	fi
	rm -f "$log"
done

stage check-modalias "module aliases: virtio_console_rs.ko has the C driver's"
c_alias=$(modinfo -F alias "$OUT/virtio_console.ko" | sort)
rs_alias=$(modinfo -F alias "$OUT/virtio_console_rs.ko" | sort)
rng_alias=$(modinfo -F alias "$OUT/rust_virtio_rng.ko")
if [ -z "$rs_alias" ] || [ "$c_alias" != "$rs_alias" ]; then
	echo "modalias: virtio_console.ko has '$c_alias', virtio_console_rs.ko has '$rs_alias'" >&2
	fail=1
fi
if [ "$rng_alias" != "virtio:d00000004v*" ]; then
	echo "modalias: rust_virtio_rng.ko has '$rng_alias', want 'virtio:d00000004v*'" >&2
	fail=1
fi
stage_end
if [ "$fail" -ne 0 ]; then
	echo "checks: FAILED" >&2
	exit 1
fi
echo "checks: rustfmt, no-unsafe, checkpatch, clippy, rustdoc, module aliases and host tools clean" >&2
