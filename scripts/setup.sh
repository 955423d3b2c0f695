#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Fetch everything the build needs, idempotently.  Results live under
# $VCON_CACHE (default ~/.cache/virtio-console-rs); each stage leaves a stamp
# file that names what it produced, so a second run downloads nothing.
# Nothing here upgrades the system: trixie-backports packages are only
# downloaded and unpacked into the cache with a private apt configuration.

. "$(dirname "$0")/lib.sh"

APT_PKGS="qemu-system-x86 busybox-static flex bison bc cpio libelf-dev libssl-dev
	xz-utils dwarves python3 rsync kmod unzip ca-certificates qemu-guest-agent"

need rustc "install a Rust toolchain with rustup (https://rustup.rs)"
need cargo "install a Rust toolchain with rustup (https://rustup.rs)"
need apt-get "this set-up expects Debian 12"

stage apt "Debian 12 packages"
missing=""
for p in $APT_PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
		missing="$missing $p"
done
if [ -n "$missing" ]; then
	SUDO=""
	[ "$(id -u)" -eq 0 ] || SUDO="sudo"
	echo "installing:$missing" >&2
	retry 3 $SUDO apt-get update -qq || die "apt-get update failed"
	retry 3 $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
		--no-install-recommends $missing >/dev/null ||
		die "apt-get install$missing failed; install those packages by hand"
fi

stage debs "linux-source-$KVER and rust-src from trixie-backports (download only)"
RUSTC_VER=$(rustc --version | awk '{print $2}')
A=$CACHE/apt
mkdir -p "$A/lists/partial" "$A/archives/partial"
mirror=$(debian_mirror)
[ -n "$mirror" ] || die "no Debian mirror found in /etc/apt/sources.list*"
echo "deb ${mirror%/} trixie-backports main" >"$A/sources.list"
APTO=(-o Dir::Etc::SourceList="$A/sources.list" -o Dir::Etc::SourceParts=/dev/null
	-o Dir::State::Lists="$A/lists" -o Dir::Cache::Archives="$A/archives"
	-o Dir::Cache="$A" -o APT::Default-Release= -o Debug::NoLocking=1
	-o Acquire::Check-Valid-Until=false -o APT::Sandbox::User=root)
need_deb() { ! ls "$A/archives/$1"_*.deb >/dev/null 2>&1; }
if need_deb linux-source-$KVER || ! ls "$A/archives/"rust-src_"${RUSTC_VER}"+*.deb >/dev/null 2>&1; then
	retry 3 apt-get "${APTO[@]}" update -qq || die "apt update of trixie-backports failed"
	rsv=$(apt-cache "${APTO[@]}" madison rust-src | awk -v v="$RUSTC_VER" \
		'$3 ~ "^"v"\\+" {print $3; exit}')
	[ -n "$rsv" ] || die "no rust-src matching rustc $RUSTC_VER in trixie-backports; use rustup to pick a rustc that Debian ships"
	# apt-get download verifies checksums and only renames a complete file
	# into place, so an interrupted download is retried, never reused.
	(cd "$A/archives" && retry 3 apt-get "${APTO[@]}" download -q \
		linux-source-$KVER "rust-src=$rsv") || die "download of debs failed"
fi

stage unpack "kernel tarball and rust library source"
ksdeb=$(ls "$A/archives/"linux-source-${KVER}_*.deb | tail -n1)
key=$(basename "$ksdeb" .deb)
if [ ! -f "$CACHE/src/$key/.done" ]; then
	rm -rf "$CACHE/src/$key"
	mkdir -p "$CACHE/src/$key"
	dpkg-deb -x "$ksdeb" "$CACHE/src/$key"
	touch "$CACHE/src/$key/.done"
fi
ls "$CACHE/src/$key"/usr/src/linux-source-$KVER.tar.* >"$CACHE/kernel-tarball.path"
rsdeb=$(ls "$A/archives/"rust-src_"${RUSTC_VER}"+*.deb | tail -n1)
key=$(basename "$rsdeb" .deb)
if [ ! -f "$CACHE/src/$key/.done" ]; then
	rm -rf "$CACHE/src/$key"
	mkdir -p "$CACHE/src/$key"
	dpkg-deb -x "$rsdeb" "$CACHE/src/$key"
	touch "$CACHE/src/$key/.done"
fi
ls -d "$CACHE/src/$key"/usr/src/rustc-*/library >"$CACHE/rust-src.path"

stage udev "systemd-udevd from Debian 12 for the guest (download only)"
U=$CACHE/udev
if [ ! -f "$U/.done" ]; then
	rm -rf "$U"
	mkdir -p "$U/debs"
	(cd "$U/debs" && retry 3 apt-get download -q -o APT::Sandbox::User=root udev libsystemd-shared) ||
		die "apt-get download udev libsystemd-shared failed"
	for d in "$U"/debs/*.deb; do dpkg-deb -x "$d" "$U/root"; done
	[ -x "$U/root/bin/udevadm" ] || die "the udev package holds no bin/udevadm"
	touch "$U/.done"
fi

stage libclang "libclang >= 17 from the Python package index"
if [ -z "$LIBCLANG_DIR" ] || [ ! -f "$LIBCLANG_DIR/libclang.so" ]; then
	need python3 "apt-get install python3 python3-pip"
	rm -rf "$CACHE/libclang" "$CACHE/wheel"
	mkdir -p "$CACHE/wheel"
	retry 3 python3 -m pip download -q --no-deps --only-binary=:all: \
		--platform manylinux2010_x86_64 -d "$CACHE/wheel" libclang==18.1.1 ||
		die "pip download libclang==18.1.1 failed"
	mkdir -p "$CACHE/libclang.tmp"
	(cd "$CACHE/libclang.tmp" && unzip -q "$CACHE"/wheel/libclang-*.whl)
	mv "$CACHE/libclang.tmp" "$CACHE/libclang"
	lib=$(find "$CACHE/libclang" -name libclang.so | head -n1)
	[ -n "$lib" ] || die "the libclang wheel holds no libclang.so"
	dirname "$lib" >"$CACHE/libclang.path"
	LIBCLANG_DIR=$(cat "$CACHE/libclang.path")
fi

stage bindgen "bindgen-cli 0.72.1 from the crate registry"
if [ ! -x "$BINDGEN" ]; then
	LIBCLANG_PATH=$LIBCLANG_DIR retry 2 cargo install -q --locked bindgen-cli \
		--version 0.72.1 --root "$CACHE/bindgen.tmp" || die "cargo install bindgen-cli failed"
	rm -rf "$CACHE/bindgen"
	mv "$CACHE/bindgen.tmp" "$CACHE/bindgen"
fi
stage_end
