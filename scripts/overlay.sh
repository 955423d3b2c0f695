#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# overlay.sh KDIR: apply the patch series (scripts/series/, the same one `make patches`
# writes out) to the kernel work tree: the files it adds are copied from the repository, the
# kernel files it edits are regenerated from their pristine copies (KDIR/.pristine).
# Files are written only when their content changes, so make's timestamps stay meaningful
# and rebuilds are incremental.

. "$(dirname "$0")/lib.sh"
KDIR=$1

python3 "$TOP/scripts/series.py" check
python3 "$TOP/scripts/series.py" apply "$KDIR"
