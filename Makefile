# SPDX-License-Identifier: GPL-2.0
#
# make run    set up if needed, build, boot a demo guest with the Rust driver
# make test   set up if needed, build, run the checks, KUnit and the integration tests
# make test-debug  the same tests on the debug kernel (CI runs both)
# make build  set-up, kernel, modules and the test harness only
# make bench  the C driver against the Rust driver: table, out/bench/bench.csv and .svg
# make profile  guest kernel instructions per write by function (QEMU TCG plugin, icount)
# make check  rustfmt, clippy, checkpatch and the no-unsafe rule on the project's code
# make mutants  deliberate one-line mutants of the driver, and the test that catches each
# make patches  the abstractions, driver and sample as a git format-patch series against the
#               pristine 7.3.4 tree (from scripts/series/) in out/patches/
# make patches-check  git am each patch onto the pristine tree, build after each one and run
#               checkpatch --strict on it; one result line per patch

export VCON_CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/virtio-console-rs
export VCON_OUT ?= $(CURDIR)/out
HARNESS_DIR := tools/testing/vcon-harness
HARNESS := $(HARNESS_DIR)/target/release/vcon-harness
export VCON_VCG := $(CURDIR)/$(HARNESS_DIR)/target/x86_64-unknown-linux-gnu/release/vcg

.PHONY: all setup kernel kernel-debug kernel-builtin build harness test test-debug run bench profile check \
	kunit list mutants patches patches-check clean

all: build

setup:
	@bash scripts/setup.sh

kernel: setup
	@bash scripts/build-kernel.sh

# The debug profile: KFENCE, SLUB debugging, kmemleak, lockdep, atomic-sleep and work-object
# debugging, Rust overflow checks (configs/debug.fragment), built into out/debug.
kernel-debug: setup
	@VCON_PROFILE=debug bash scripts/build-kernel.sh

# The built-in profile: the C and the Rust driver built into the bzImage
# (configs/builtin.fragment), for the console=hvc0 boot, built into out/builtin.
kernel-builtin: setup
	@VCON_PROFILE=builtin bash scripts/build-kernel.sh

harness:
	@echo "==> [harness] host harness and static guest tool" >&2
	@cd $(HARNESS_DIR) && cargo build -q --release --bin vcon-harness
	@cd $(HARNESS_DIR) && RUSTFLAGS="-C target-feature=+crt-static" \
		cargo build -q --release --target x86_64-unknown-linux-gnu --bin vcg

build: kernel harness

test: build kernel-builtin
	@bash scripts/check.sh
	@VCON_BUILTIN_OUT=$(VCON_OUT)/builtin $(HARNESS) test $(TEST_ARGS)

# The same suite on the debug kernel (KFENCE, slub_debug=FZPU, kmemleak, lockdep, ...);
# CI runs it after `make test`.
test-debug: build kernel-debug
	@VCON_DEBUG_OUT=$(VCON_OUT)/debug $(HARNESS) test --debug-only $(TEST_ARGS)

kunit: build
	@$(HARNESS) kunit

run: build
	@$(HARNESS) run $(RUN_ARGS)

# C reference against Rust, same guest and host program, alternated runs (BENCH_ARGS="--reps N").
bench: build
	@$(HARNESS) bench $(BENCH_ARGS)

# Guest kernel instructions per write by function, from a QEMU TCG plugin under icount
# (PROFILE_ARGS="c|rust [hvc [raw] | ping | h2g] [--size N] [--writes N] [--top N]").
PROFILE_PLUGIN := tools/testing/vcon-tcg-profile/target/release/libvcon_tcg_profile.so
profile: build
	@cd tools/testing/vcon-tcg-profile && cargo build -q --release
	@VCON_TCG_PROFILE=$(CURDIR)/$(PROFILE_PLUGIN) $(HARNESS) profile $(PROFILE_ARGS)

check: kernel
	@bash scripts/check.sh

# Each mutant in tools/testing/mutants/mutants.txt (or only MUTANTS="name ..."), built and run
# against the Rust driver's tests until one fails; fails if a mutant survives.
mutants: build
	@bash scripts/mutants.sh $(MUTANTS)

patches: setup
	@bash scripts/make-patches.sh

# Seeds its tree from the default work tree's objects, so it needs the kernel built.
patches-check: kernel patches
	@bash scripts/patches-check.sh

list: harness
	@$(HARNESS) list

clean:
	rm -rf out $(HARNESS_DIR)/target
