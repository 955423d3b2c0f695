#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""The patch series in scripts/series/: the one description of what goes into the kernel tree.

Each file scripts/series/NN-name.txt is one patch: a commit message (subject line, blank line,
body) ended by a line "---", then directives, applied in order:

  new PATH                      add the repository's file PATH at the same path in the tree
  append PATH                   append the block below to the kernel file PATH
  insert PATH after REGEX       insert the block after the one line matching REGEX
  insert PATH before REGEX      insert the block before the one line matching REGEX
  drop PATH                     remove the block below (present exactly once) from PATH

A block is the lines after a directive that start with "|": "| text" stands for "text", a lone
"|" for an empty line.

Usage:
  series.py list                   the patch files, in order
  series.py message N              the commit message of patch N (1-based)
  series.py apply KDIR [--upto N] [--pristine DIR]
      write the tree's state after patch N (default: all) into KDIR, writing only files whose
      content changes. Kernel files the series edits are edited from their pristine copies, kept
      in DIR (default KDIR/.pristine, saved the first time a file is edited).
  series.py added | edited         the files the series adds / the kernel files it edits
  series.py check                  every project file is in exactly one patch, and applying the
                                   whole series reproduces each added file exactly
"""

import os
import re
import sys

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERIES_DIR = os.path.join(TOP, "scripts", "series")
# Project files that must reach the tree through some patch; the Kbuild files listed in
# EXTERNAL_ONLY exist only for the external-module build (make M=...).
TREE_DIRS = ["rust/kernel", "rust/helpers", "drivers/virtio", "include/linux",
             "drivers/char/virtio_console_rs", "samples/rust"]
EXTERNAL_ONLY = {"samples/rust/Kbuild"}


class SeriesError(Exception):
    pass


def parse(path):
    """Returns (subject, body, directives) of one patch file."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    try:
        sep = lines.index("---")
    except ValueError:
        raise SeriesError(f"{path}: no '---' line after the commit message") from None
    msg = lines[:sep]
    if not msg or not msg[0].startswith("Subject: ") or (len(msg) > 1 and msg[1]):
        raise SeriesError(f"{path}: the message must start with 'Subject: ' and a blank line")
    subject = msg[0][len("Subject: "):]
    body = "\n".join(msg[2:]).strip("\n")
    directives = []
    for n, line in enumerate(lines[sep + 1:], sep + 2):
        if line.startswith("|"):
            if not directives:
                raise SeriesError(f"{path}:{n}: block line before any directive")
            directives[-1]["block"].append(line[2:] if line.startswith("| ") else line[1:])
            continue
        if not line.strip() or line.startswith("#"):
            continue
        words = line.split(" ", 3)
        op = words[0]
        d = {"op": op, "path": words[1] if len(words) > 1 else "", "block": [], "where": n}
        if op == "insert" and len(words) == 4 and words[2] in ("after", "before"):
            d["side"], d["regex"] = words[2], words[3]
        elif op not in ("new", "append", "drop") or len(words) != 2:
            raise SeriesError(f"{path}:{n}: cannot parse '{line}'")
        directives.append(d)
    return subject, body, directives


def patch_files():
    return sorted(os.path.join(SERIES_DIR, f) for f in os.listdir(SERIES_DIR)
                  if f.endswith(".txt"))


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def edit(content, d, origin):
    """Applies one edit directive to a file's content."""
    block = "".join(line + "\n" for line in d["block"])
    if d["op"] == "append":
        return content + block
    lines = content.splitlines(keepends=True)
    if d["op"] == "drop":
        if content.count(block) != 1:
            raise SeriesError(f"{origin}: block to drop from {d['path']} found "
                              f"{content.count(block)} times")
        return content.replace(block, "")
    rx = re.compile(d["regex"])
    hits = [i for i, line in enumerate(lines) if rx.search(line.rstrip("\n"))]
    if len(hits) != 1:
        raise SeriesError(f"{origin}: '{d['regex']}' matches {len(hits)} lines of {d['path']}")
    at = hits[0] + (1 if d["side"] == "after" else 0)
    return "".join(lines[:at]) + block + "".join(lines[at:])


def tree_state(upto, pristine_of):
    """The content of every file the first `upto` patches add or edit, after those patches."""
    files = {}
    for path in patch_files()[:upto]:
        for d in parse(path)[2]:
            origin = f"{os.path.basename(path)}:{d['where']}"
            if d["op"] == "new":
                files[d["path"]] = read(os.path.join(TOP, d["path"]))
            else:
                if d["path"] not in files:
                    files[d["path"]] = pristine_of(d["path"])
                if files[d["path"]] is not None:
                    files[d["path"]] = edit(files[d["path"]], d, origin)
    return files


def write_if_changed(path, content):
    try:
        if read(path) == content:
            return False
    except FileNotFoundError:
        pass
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".series-tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(content)
    os.replace(tmp, path)
    return True


def apply(kdir, upto, pristine_dir):
    added = {d["path"] for p in patch_files() for d in parse(p)[2] if d["op"] == "new"}

    def pristine_of(rel):
        if rel in added:
            raise SeriesError(f"{rel} is edited before the patch that adds it")
        saved = os.path.join(pristine_dir, rel)
        if not os.path.exists(saved):
            write_if_changed(saved, read(os.path.join(kdir, rel)))
        return read(saved)

    for rel, content in sorted(tree_state(upto, pristine_of).items()):
        if write_if_changed(os.path.join(kdir, rel), content):
            print(f"  series: {rel}", file=sys.stderr)


def check():
    owners = {}
    for path in patch_files():
        for d in parse(path)[2]:
            if d["op"] == "new":
                if d["path"] in owners:
                    raise SeriesError(f"{d['path']} is added by {owners[d['path']]} and {path}")
                owners[d["path"]] = os.path.basename(path)
    for top in TREE_DIRS:
        for root, _, names in os.walk(os.path.join(TOP, top)):
            for name in names:
                rel = os.path.relpath(os.path.join(root, name), TOP)
                if rel not in owners and rel not in EXTERNAL_ONLY:
                    raise SeriesError(f"{rel} is in no patch of scripts/series/")
    # Kernel files (None: no pristine copy here) are left out; the added files are compared.
    final = tree_state(len(patch_files()), lambda rel: None)
    for rel in owners:
        if final[rel] != read(os.path.join(TOP, rel)):
            raise SeriesError(f"after the whole series, {rel} differs from the repository's")


def main(argv):
    if len(argv) >= 1 and argv[0] == "list":
        print("\n".join(patch_files()))
    elif len(argv) == 2 and argv[0] == "message":
        subject, body, _ = parse(patch_files()[int(argv[1]) - 1])
        print(f"{subject}\n\n{body}")
    elif len(argv) >= 2 and argv[0] == "apply":
        kdir = argv[1]
        opts = dict(zip(argv[2::2], argv[3::2]))
        upto = int(opts.get("--upto", len(patch_files())))
        apply(kdir, upto, opts.get("--pristine", os.path.join(kdir, ".pristine")))
    elif argv in (["added"], ["edited"]):
        want = argv[0] == "added"
        paths = {d["path"] for p in patch_files() for d in parse(p)[2]
                 if (d["op"] == "new") == want}
        if not want:
            paths -= {d["path"] for p in patch_files() for d in parse(p)[2] if d["op"] == "new"}
        print("\n".join(sorted(paths)))
    elif argv == ["check"]:
        check()
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except SeriesError as e:
        print(f"series: {e}", file=sys.stderr)
        sys.exit(1)
