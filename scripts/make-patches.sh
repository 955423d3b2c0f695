#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# make-patches.sh: write the series (scripts/series/) as `git format-patch` files against the
# pristine kernel tree into out/patches/.  The commits are made in a small repository that
# holds only the kernel files the series edits, taken from the pristine tree, so the patches'
# index lines name the pristine tree's blobs and `git am` applies them to that tree.

. "$(dirname "$0")/lib.sh"

PRISTINE=$(bash "$TOP/scripts/pristine-tree.sh")
SERIES=(python3 "$TOP/scripts/series.py")
WORK=$CACHE/patches-work
DEST=$OUT/patches
stage patches "format-patch series into $DEST"
"${SERIES[@]}" check
rm -rf "$WORK" "$DEST"
mkdir -p "$WORK"
git -C "$WORK" init -q -b series
GIT=(git -C "$WORK" -c user.name="$(git -C "$TOP" config user.name || echo vcon)"
	-c user.email="$(git -C "$TOP" config user.email || echo vcon@localhost)")
while IFS= read -r f; do
	mkdir -p "$WORK/$(dirname "$f")"
	cp "$PRISTINE/$f" "$WORK/$f"
done < <("${SERIES[@]}" edited)
"${GIT[@]}" add -A -f
"${GIT[@]}" commit -q -m base
base=$("${GIT[@]}" rev-parse HEAD)
n=$("${SERIES[@]}" list | wc -l)
for ((i = 1; i <= n; i++)); do
	"${SERIES[@]}" apply "$WORK" --upto "$i" --pristine "$PRISTINE" 2>/dev/null
	"${GIT[@]}" add -A -f
	"${SERIES[@]}" message "$i" | "${GIT[@]}" commit -q -F -
done
"${GIT[@]}" format-patch -q --no-signature -o "$DEST" "$base..HEAD"
stage_end
ls "$DEST" >&2
