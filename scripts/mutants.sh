#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# mutants.sh [NAME...]: build each deliberate mutant of the driver listed in
# tools/testing/mutants/mutants.txt (all of them by default) and run the Rust
# driver's tests against it (KUnit, then every scenario in `vcon-harness list`
# order, or the record's `tests:`) until one fails, on the normal kernel or, for a
# record with `profile: debug`, on the debug kernel.  Prints which test caught each
# mutant; exits non-zero if a mutant survives every test or cannot be applied.
# Needs `make build` first (and `make kernel-debug` for debug records).

. "$(dirname "$0")/lib.sh"

LIST=$TOP/tools/testing/mutants/mutants.txt
HARNESS=$TOP/tools/testing/vcon-harness/target/release/vcon-harness
[ -x "$HARNESS" ] || die "no harness: run 'make build' first"
export VCON_VCG=${VCON_VCG:-$TOP/tools/testing/vcon-harness/target/x86_64-unknown-linux-gnu/release/vcg}

# field NAME KEY: the value of KEY in mutant NAME's record (empty if none).
field() {
	awk -v n="$1" -v k="$2:" '
		$1 == "name:" { cur = $2 }
		cur == n && $1 == k { sub(/^[^:]*:[ \t]*/, ""); print; exit }' "$LIST"
}

if [ $# -gt 0 ]; then
	names=("$@")
else
	mapfile -t names < <(awk '$1 == "name:" { print $2 }' "$LIST")
fi
mapfile -t scenarios < <("$HARNESS" list | awk '{ print $1 }')

summary=$OUT/mutants/summary.txt
mkdir -p "$OUT/mutants"
: >"$summary"
survivors=0
for m in "${names[@]}"; do
	stage "mutant" "$m"
	profile=$(field "$m" profile)
	if [ "$profile" = debug ]; then
		kout=$OUT/debug
		KDIR=$(cat "$CACHE/kdir-debug.path" 2>/dev/null) ||
			die "no debug kernel tree: run 'make kernel-debug' first"
		run=(env VCON_DEBUG_OUT="$OUT/mutants/$m/out" "$HARNESS" test --debug-only)
	else
		kout=$OUT
		KDIR=$(cat "$CACHE/kdir.path" 2>/dev/null) ||
			die "no kernel tree: run 'make build' first"
		run=(env VCON_OUT="$OUT/mutants/$m/out" "$HARNESS" test)
	fi
	for f in bzImage virtio_console.ko rust_virtio_rng.ko; do
		[ -f "$kout/$f" ] || die "$kout/$f is missing: run 'make build' (or 'make kernel-debug') first"
	done
	KMAKE=(make -C "$KDIR" -j"$(($(nproc) + 1))" -s
		RUST_LIB_SRC="$(RUST_SRC_DIR)" LIBCLANG_PATH="$LIBCLANG_DIR" BINDGEN="$BINDGEN")
	read -r -a tests <<<"$(field "$m" tests)"
	[ "${#tests[@]}" -gt 0 ] || tests=(kunit "${scenarios[@]}")
	dir=$OUT/mutants/$m
	rm -rf "$dir"
	mkdir -p "$dir/src/drivers" "$dir/out"
	cp "$TOP/Kbuild" "$dir/src/"
	cp -r "$TOP/drivers/char" "$dir/src/drivers/"
	cp -r "$TOP/samples" "$dir/src/"
	if ! python3 "$TOP/tools/testing/mutants/apply.py" "$LIST" "$m" "$dir/src"; then
		echo "$m	NOT APPLIED" >>"$summary"
		survivors=$((survivors + 1))
		continue
	fi
	# The tree's lock, as build-kernel.sh takes it: no other checkout rebuilds it meanwhile.
	if ! flock "$KDIR.lock" "${KMAKE[@]}" M="$dir/src" MO="$dir/modbuild" CONFIG_VIRTIO_CONSOLE_RS=m modules \
		>"$dir/build.log" 2>&1; then
		cat "$dir/build.log" >&2
		echo "$m	DOES NOT BUILD" >>"$summary"
		survivors=$((survivors + 1))
		continue
	fi
	for f in bzImage virtio_console.ko rust_virtio_rng.ko; do
		ln -s "$kout/$f" "$dir/out/$f"
	done
	cp "$dir/modbuild/drivers/char/virtio_console_rs/virtio_console_rs.ko" "$dir/out/"
	caught=""
	for t in "${tests[@]}"; do
		rc=0
		timeout 900 "${run[@]}" --driver rust --only "$t" >"$dir/$t.txt" 2>&1 || rc=$?
		if [ "$rc" -eq 124 ]; then
			# A test that hangs fails too (CI stops it at its time limit).
			caught="$t: did not end within 900 s"
			break
		elif [ "$rc" -ne 0 ]; then
			# Only a test's FAIL line counts as a catch; a harness that could not
			# run the test is an error of this run, not a caught mutant.
			caught=$(grep -m1 '^FAIL' "$dir/$t.txt" | cut -c1-300) ||
				die "mutant $m, test $t: the harness failed without a FAIL line (see $dir/$t.txt)"
			# The first KUnit case that failed: a failed Rust assertion skips the
			# case's destructors, so later cases may fail only in its wake.
			first=$(grep -m1 -E '^\[[ 0-9.]+\] +not ok [0-9]+ ' "$dir/out/logs/kunit.log" \
				2>/dev/null | sed -E 's/.*not ok [0-9]+ //') || true
			[ "$t" != kunit ] || [ -z "$first" ] || caught="$caught (first failed case: $first)"
			break
		fi
	done
	if [ -n "$caught" ]; then
		echo "$m	caught by $caught" | tee -a "$summary"
	else
		echo "$m	SURVIVED every test" | tee -a "$summary"
		survivors=$((survivors + 1))
	fi
done
stage_end
echo "== mutants (also in $summary)"
cat "$summary"
[ "$survivors" -eq 0 ] || die "$survivors mutant(s) survived or could not be tested"
