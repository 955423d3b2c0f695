#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# overlay.sh KDIR: copy the project's rust/ files, and the in-kernel test
# device (drivers/virtio/, include/linux/), into the kernel tree and apply
# rust/registrations (lines appended to existing kernel files).
# Files are written only when their content changes, so make's timestamps
# stay meaningful and rebuilds are incremental.

. "$(dirname "$0")/lib.sh"
KDIR=$1

# New files: copied by checksum.
rsync -rc --exclude registrations "$TOP/rust/" "$KDIR/rust/"
rsync -rc "$TOP/drivers/virtio/" "$KDIR/drivers/virtio/"
rsync -rc "$TOP/include/linux/" "$KDIR/include/linux/"

# Edited files: regenerated from the pristine copy plus our lines.
files=$(awk '!/^#/ && NF {print $1}' "$TOP/rust/registrations" | sort -u)
for f in $files; do
	[ -f "$KDIR/.pristine/$f" ] || {
		mkdir -p "$KDIR/.pristine/$(dirname "$f")"
		cp "$KDIR/$f" "$KDIR/.pristine/$f"
	}
	tmp=$(mktemp)
	{
		cat "$KDIR/.pristine/$f"
		awk -v f="$f" '!/^#/ && $1 == f { sub(/^[^ \t]+[ \t]+/, ""); print }' \
			"$TOP/rust/registrations"
	} >"$tmp"
	if cmp -s "$tmp" "$KDIR/$f"; then rm -f "$tmp"; else mv "$tmp" "$KDIR/$f"; fi
done
