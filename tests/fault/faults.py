"""Helpers of tests/fault_test.sh (h5py; the results file of a gpfq sweep).

    faults.py scale IN OUT NODE MAX   copy the model IN to OUT with the weights of
                                      node NODE (e.g. 0009) scaled to max |w| = MAX
    faults.py statuses FILE           per row: task id, status and message
    faults.py layers FILE             /layers matches /results: every done task
                                      has the same number (> 0) of layer rows,
                                      failed tasks none, and no row belongs to
                                      no task (blank rows included)
    faults.py finite FILE COLUMN...   every done row of /results has finite
                                      values in the COLUMNs
    faults.py eoa FILE                the end of the file that its superblock
                                      records (version 0, as gpfq writes it)
    faults.py same ORIG FILE          rows of FILE equal to ORIG's row of the
                                      same task (count), and rows of FILE
                                      differing from it (count)

Exit status 0, or 1 with the problems on stdout, 2 when a file cannot be read.
"""
import collections
import math
import shutil
import struct
import sys

import h5py
import numpy as np


def text(value):
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def table(path, name):
    with h5py.File(path, "r") as f:
        return f[name][()]


def scale(src, dst, node, top):
    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        w = f[f"nodes/{node}/weight"]
        a = w[()].astype(np.float64)
        w[...] = (a / np.abs(a).max() * float(top)).astype(np.float32)
        if not np.isfinite(w[()]).all():
            print(f"{dst}: scaled weights are not finite")
            return 1
    return 0


def statuses(path):
    for r in table(path, "results"):
        print(text(r["task_id"]), text(r["status"]), text(r["message"]))
    return 0


def layers(path):
    rows, lays = table(path, "results"), table(path, "layers")
    status = {text(r["task_id"]): text(r["status"]) for r in rows}
    per_task = collections.Counter(text(x["task_id"]) for x in lays)
    problems = [f"{n} layer row(s) of task '{t}', which /results does not hold"
                for t, n in per_task.items() if t not in status]
    done_counts = {per_task[t] for t, s in status.items() if s == "done"}
    if len(done_counts) > 1 or 0 in done_counts:
        problems.append(f"done tasks have differing layer counts: {sorted(done_counts)}")
    problems += [f"failed task {t} has {per_task[t]} layer rows"
                 for t, s in status.items() if s != "done" and per_task[t]]
    for p in problems:
        print(p)
    return 1 if problems else 0


def finite(path, *columns):
    bad = [f"task {text(r['task_id'])}: {c} is {r[c]}" for r in table(path, "results")
           for c in columns if text(r["status"]) == "done" and not math.isfinite(r[c])]
    for b in bad:
        print(b)
    return 1 if bad else 0


def eoa(path):
    with open(path, "rb") as f:
        head = f.read(48)
    if head[:8] != b"\x89HDF\r\n\x1a\n" or head[8] != 0:
        print(f"{path}: no version-0 HDF5 superblock")
        return 1
    print(struct.unpack("<Q", head[40:48])[0])
    return 0


def same(orig, path):
    want = {text(r["task_id"]): r.tobytes() for r in table(orig, "results")}
    equal = differ = 0
    for r in table(path, "results"):
        if want.get(text(r["task_id"])) == r.tobytes():
            equal += 1
        else:
            differ += 1
    print(equal, differ)
    return 0


def main(argv):
    commands = {"scale": scale, "statuses": statuses, "layers": layers, "finite": finite,
                "eoa": eoa, "same": same}
    if len(argv) < 3 or argv[1] not in commands:
        print(__doc__)
        return 2
    try:
        return commands[argv[1]](*argv[2:])
    except (OSError, KeyError) as e:
        print(f"faults.py {argv[1]}: cannot read: {e}")
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
