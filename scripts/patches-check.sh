#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# patches-check.sh: apply out/patches/ with `git am` to the pristine kernel tree, one patch at
# a time, and after each one build the kernel and its modules (the config: tinyconfig,
# .config.fragment, and the driver and the sample as modules) and run
# `checkpatch.pl --strict --no-signoff` on the patch.  Prints one line per patch and fails
# if any patch does not apply, build or pass checkpatch.
#
# The check tree ($CACHE/patches-check) is a git repository of the pristine tree.  Created the
# first time from a copy of the default work tree, whose objects make the first build
# incremental; its sources are then reset to the pristine commit (files the overlay changed get
# a new mtime and are rebuilt, files it added are removed).  Later runs reset it the same way.

. "$(dirname "$0")/lib.sh"

PRISTINE=$(bash "$TOP/scripts/pristine-tree.sh")
CHECK=$CACHE/patches-check
LOGS=$OUT/patches-check
PATCHES=("$OUT"/patches/*.patch)
[ -f "${PATCHES[0]}" ] || die "no patches in $OUT/patches: run 'make patches'"
base=$(cat "$PRISTINE/.git/vcon-base")
start=$(date +%s)

stage check-tree "pristine tree with build objects ($CHECK)"
if [ ! -f "$CHECK/.git/vcon-base" ]; then
	seed=$(cat "$CACHE/kdir.path" 2>/dev/null) || die "no built work tree: run 'make kernel'"
	rm -rf "$CHECK" "$CHECK.tmp"
	# Not while a build runs in the seed (build-kernel.sh holds the same lock).
	exec 8>"$seed.lock"
	flock 8
	cp -a "$seed" "$CHECK.tmp"
	exec 8>&-
	rm -rf "$CHECK.tmp/.pristine"
	git clone -q --no-checkout "$PRISTINE" "$CHECK.tmp/clone"
	mv "$CHECK.tmp/clone/.git" "$CHECK.tmp/.git"
	rmdir "$CHECK.tmp/clone"
	cp "$PRISTINE/.git/vcon-base" "$CHECK.tmp/.git/vcon-base"
	mv "$CHECK.tmp" "$CHECK"
fi
exec 9>"$CHECK.lock"
flock 9
GIT=(git -C "$CHECK" -c user.name=vcon -c user.email=vcon@localhost)
"${GIT[@]}" am --abort >/dev/null 2>&1 || true
# Only the files whose content differs from the pristine commit are rewritten.
"${GIT[@]}" checkout -q -f -B check "$base"
while IFS= read -r f; do
	"${GIT[@]}" ls-files --error-unmatch "$f" >/dev/null 2>&1 || rm -f "$CHECK/$f"
done < <(python3 "$TOP/scripts/series.py" added)

KMAKE=(make -C "$CHECK" -j"$(($(nproc) + 1))" -s
	RUST_LIB_SRC="$(RUST_SRC_DIR)" LIBCLANG_PATH="$LIBCLANG_DIR" BINDGEN="$BINDGEN")
frag=$(mktemp)
trap 'rm -f "$frag"' EXIT
cat "$TOP/.config.fragment" >"$frag"
printf '%s\n' CONFIG_SAMPLES=y CONFIG_SAMPLES_RUST=y CONFIG_SAMPLE_RUST_VIRTIO_RNG=m \
	CONFIG_VIRTIO_CONSOLE_RS=m >>"$frag"

rm -rf "$LOGS"
mkdir -p "$LOGS"
fail=0
results=()
for p in "${PATCHES[@]}"; do
	name=$(basename "$p" .patch)
	log=$LOGS/$name.log
	stage "${name:0:4}" "$name"
	applies=FAIL builds=- checkpatch=-
	if "${GIT[@]}" am -q "$p" >"$log" 2>&1; then
		applies=ok
		builds=FAIL
		if {
			"${KMAKE[@]}" tinyconfig &&
				(cd "$CHECK" && scripts/kconfig/merge_config.sh -m .config "$frag") &&
				"${KMAKE[@]}" olddefconfig && "${KMAKE[@]}" bzImage modules
		} >>"$log" 2>&1; then
			builds=ok
		fi
		checkpatch=FAIL
		if (cd "$CHECK" && perl scripts/checkpatch.pl --strict --no-signoff -q "$p") >>"$log" 2>&1; then
			checkpatch=ok
		fi
	fi
	line="$name: applies=$applies builds=$builds checkpatch=$checkpatch"
	results+=("$line")
	echo "$line" >&2
	if [ "$applies/$builds/$checkpatch" != ok/ok/ok ]; then
		fail=1
		tail -n 20 "$log" >&2
		[ "$applies" = ok ] || break
	fi
done
stage_end
# The last patch's build must have built the driver, the sample and the test device in-tree.
for f in drivers/char/virtio_console_rs/virtio_console_rs.ko samples/rust/rust_virtio_rng.ko \
	drivers/virtio/virtio_test_device.o; do
	[ -f "$CHECK/$f" ] || { echo "missing after the series: $f" >&2; fail=1; }
done
printf '%s\n' "${results[@]}"
echo "patches-check: ${#results[@]}/${#PATCHES[@]} patches checked in $(($(date +%s) - start))s" \
	"(logs in $LOGS)"
[ "$fail" = 0 ] || die "patches-check failed"
