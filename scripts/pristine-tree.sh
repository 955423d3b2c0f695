#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# pristine-tree.sh: unpack the kernel source tarball, untouched, into the cache once and make
# it a git repository with one commit of every file (the base of `make patches` and
# `make patches-check`; `add -f`, as Debian's .gitignore ignores the whole top level).
# Prints the tree's path.  The tarball is Debian's linux-source-7.3 (7.3.4 with Debian's
# patches): the Debian archive has no deb-src entry on this machine, and the orig tarball
# Debian ships is itself repacked, so the series is made against that tree.

. "$(dirname "$0")/lib.sh"

[ -f "$CACHE/kernel-tarball.path" ] || die "set-up has not run: run 'make setup'"
tarball=$(cat "$CACHE/kernel-tarball.path")
key=$(basename "$(dirname "$(dirname "$(dirname "$tarball")")")")
PRISTINE=$CACHE/pristine/$key
if [ ! -f "$PRISTINE/.git/vcon-base" ]; then
	stage pristine "unpack $key as a git repository"
	rm -rf "$PRISTINE" "$PRISTINE.tmp"
	mkdir -p "$PRISTINE.tmp"
	tar -C "$PRISTINE.tmp" --strip-components=1 -xf "$tarball"
	git -C "$PRISTINE.tmp" init -q -b base
	git -C "$PRISTINE.tmp" add -A -f
	git -C "$PRISTINE.tmp" -c user.name=vcon -c user.email=vcon@localhost \
		commit -q -m "Linux 7.3.4 ($key)"
	git -C "$PRISTINE.tmp" rev-parse HEAD >"$PRISTINE.tmp/.git/vcon-base"
	mv "$PRISTINE.tmp" "$PRISTINE"
	stage_end
fi
echo "$PRISTINE"
