#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""apply.py LIST NAME TREE: apply mutant NAME of LIST (mutants.txt) to the copy TREE.

Prints the changed line before and after. Fails, changing nothing, unless the record's
`old` line occurs exactly once where the record says, so a mutant whose line moved or
changed is reported instead of silently testing the unchanged driver.
"""
import sys


def records(path):
    rec = None
    for raw in open(path, encoding="utf-8").read().split("\n"):
        if raw.startswith("#") or not raw.strip():
            continue
        key, _, rest = raw.partition(":")
        if key in ("old", "new"):
            _, bar, val = rest.partition("|")
            if not bar:
                sys.exit(f"{path}: {key} without '|': {raw!r}")
        else:
            val = rest.strip()
        if key == "name":
            rec = {"name": val}
            yield rec
        elif rec is None:
            sys.exit(f"{path}: {raw!r} before the first name:")
        else:
            rec[key] = val


def main():
    path, name, tree = sys.argv[1:4]
    found = [r for r in records(path) if r["name"] == name]
    if len(found) != 1:
        sys.exit(f"mutant {name}: {len(found)} records")
    r = found[0]
    for k in ("file", "old", "new", "what"):
        if k not in r:
            sys.exit(f"mutant {name}: no {k}:")
    target = f"{tree}/{r['file']}"
    lines = open(target, encoding="utf-8").read().split("\n")
    lo, hi = 0, len(lines)
    if "within" in r:
        starts = [i for i, l in enumerate(lines) if r["within"] in l]
        if len(starts) != 1:
            sys.exit(f"mutant {name}: 'within' text found {len(starts)} times in {r['file']}")
        lo = starts[0]
        hi = next((i for i in range(lo + 1, len(lines)) if " fn " in lines[i]), len(lines))
    hits = [i for i in range(lo, hi) if lines[i] == r["old"]]
    if len(hits) != 1:
        sys.exit(f"mutant {name}: the old line occurs {len(hits)} times where it is looked for")
    i = hits[0]
    print(f"{r['file']}:{i + 1}: {r['what']}")
    print(f"-{lines[i]}")
    if r["new"]:
        print(f"+{r['new']}")
        lines[i] = r["new"]
    else:
        del lines[i]
    open(target, "w", encoding="utf-8").write("\n".join(lines))


if __name__ == "__main__":
    main()
