#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Build the 7.3 kernel with the project's rust/ overlay, the C reference
# module and the project's external modules.  The work tree is kept in the
# cache, keyed by the source package; the overlay is copied by content so
# only changed files get a new mtime and make rebuilds incrementally.

. "$(dirname "$0")/lib.sh"

[ -f "$CACHE/kernel-tarball.path" ] || die "set-up has not run: run 'make setup'"
tarball=$(cat "$CACHE/kernel-tarball.path")
key=$(basename "$(dirname "$(dirname "$(dirname "$tarball")")")")
# VCON_PROFILE=debug builds a second tree with configs/debug.fragment on top, into out/debug.
PROFILE=${VCON_PROFILE:-default}
FRAGMENTS=("$TOP/.config.fragment")
suffix=""
# VCON_PROFILE=builtin builds a third tree with configs/builtin.fragment (both drivers built
# in, for the console=hvc0 boot), into out/builtin.
case "$PROFILE" in
default) ;;
debug | builtin)
	FRAGMENTS+=("$TOP/configs/$PROFILE.fragment")
	suffix="-$PROFILE"
	OUT=$OUT/$PROFILE
	mkdir -p "$OUT"
	;;
*) die "VCON_PROFILE must be default, debug or builtin" ;;
esac
KDIR=$CACHE/build/$key$suffix
BASE_KDIR=$CACHE/build/$key
KMAKE=(make -C "$KDIR" -j"$(($(nproc) + 1))" -s
	RUST_LIB_SRC="$(RUST_SRC_DIR)" LIBCLANG_PATH="$LIBCLANG_DIR" BINDGEN="$BINDGEN")

stage tree "kernel work tree ($key)"
if [ ! -f "$KDIR/.unpacked" ] && [ "$PROFILE" = builtin ] && [ -f "$BASE_KDIR/.unpacked" ]; then
	# Seeded from the default tree, built or not: the same sources, so the first build
	# only recompiles what the fragment changes.  Under the default tree's lock, so no
	# build is writing it while it is copied.
	rm -rf "$KDIR" "$KDIR.tmp"
	(flock 9 && cp -a "$BASE_KDIR" "$KDIR.tmp") 9>"$BASE_KDIR.lock"
	rm -f "$KDIR.tmp/.fragment.sum"
	mv "$KDIR.tmp" "$KDIR"
fi
if [ ! -f "$KDIR/.unpacked" ]; then
	rm -rf "$KDIR" "$KDIR.tmp"
	mkdir -p "$KDIR.tmp"
	tar -C "$KDIR.tmp" --strip-components=1 -xf "$tarball"
	# overlay.sh keeps pristine copies of the files it edits.
	touch "$KDIR.tmp/.unpacked"
	mv "$KDIR.tmp" "$KDIR"
fi
echo "$KDIR" >"$CACHE/kdir$suffix.path"

# One build at a time per tree: a second checkout building at once waits here
# instead of interleaving two overlays and two makes in the same tree.
exec 9>"$KDIR.lock"
flock 9

stage overlay "project rust/ onto the tree"
bash "$TOP/scripts/overlay.sh" "$KDIR"

stage config ".config from tinyconfig + .config.fragment"
fsum=$(cat "${FRAGMENTS[@]}" | sha256sum | cut -c1-16)
if [ "$(cat "$KDIR/.fragment.sum" 2>/dev/null)" != "$fsum" ] || [ ! -f "$KDIR/.config" ]; then
	"${KMAKE[@]}" tinyconfig >/dev/null
	(cd "$KDIR" && scripts/kconfig/merge_config.sh -m .config "${FRAGMENTS[@]}" >/dev/null)
	"${KMAKE[@]}" olddefconfig >/dev/null
	# Every line of the fragments must have survived, or the build is not
	# what the tests assume.  A later fragment overrides an earlier one's
	# line for the same symbol (builtin.fragment's CONFIG_VIRTIO_CONSOLE=y).
	bad=""
	while IFS= read -r line; do
		case "$line" in
		CONFIG_*=n) grep -q "^${line%=n}=[ym]" "$KDIR/.config" && bad="$bad $line" ;;
		CONFIG_*) grep -qx "$line" "$KDIR/.config" || bad="$bad $line" ;;
		esac
	done < <(cat "${FRAGMENTS[@]}" | grep '^CONFIG_' | tac | awk -F= '!seen[$1]++' | tac)
	[ -z "$bad" ] || die "config lines that did not apply:$bad (see $KDIR/.config)"
	echo "$fsum" >"$KDIR/.fragment.sum"
fi
"${KMAKE[@]}" rustavailable >/dev/null || die "the kernel says Rust is not available; re-run 'make setup'"

stage kernel "bzImage and in-tree modules"
"${KMAKE[@]}" bzImage modules
cp "$KDIR/arch/x86/boot/bzImage" "$OUT/bzImage"
# For `make profile`: kernel symbols, to name the blocks the TCG profiler counted.
cp "$KDIR/System.map" "$OUT/System.map"
if [ "$PROFILE" = builtin ]; then
	# Both drivers are in the bzImage; the boot picks one with initcall_blacklist=.
	for f in __virtio_console_rs_init virtio_console_init; do
		grep -q " $f\$" "$OUT/System.map" || die "$f is not in System.map: both drivers must be built in"
	done
	stage_end
	ls -l "$OUT"/bzImage >&2
	exit 0
fi
cp "$KDIR/drivers/char/virtio_console.ko" "$OUT/virtio_console.ko"

stage modules "virtio_console_rs and samples (external modules)"
# The Kbuild files name the in-tree Kconfig symbols, unset in this kernel's .config: the
# external build sets them itself.
"${KMAKE[@]}" M="$TOP" MO="$OUT/modbuild" CONFIG_VIRTIO_CONSOLE_RS=m \
	CONFIG_SAMPLE_RUST_VIRTIO_RNG=m modules
for ko in drivers/char/virtio_console_rs/virtio_console_rs.ko samples/rust/rust_virtio_rng.ko; do
	cp "$OUT/modbuild/$ko" "$OUT/"
done
stage_end
ls -l "$OUT"/bzImage "$OUT"/*.ko >&2
