"""Reads the /results table of a gpfq sweep results file for the shell tests.

    rows.py count FILE              number of rows
    rows.py results FILE            per task: id, status and the result columns
                                    (quant_top1, quant_top5, quant_sparsity,
                                    codes_hash), one line each, sorted by id;
                                    floats in hex so that equal means bit-equal
    rows.py stamps FILE             per done task: id and finished_at (hex)
    rows.py dump FILE               every column of every row, sorted by id
    rows.py column FILE NAME        per task: id and one column
    rows.py check FILE [IDS] [--results OUT] [--stamps OUT]
                                    every task id exactly once and every row
                                    done; with IDS (a file of task ids, one a
                                    line), the ids are exactly those; also
                                    writes what `results` or `stamps` print
                                    to OUT (one read for several answers)

Exit status: 0, or 1 with the problems on stdout (check), 2 when the file
cannot be read.
"""
import sys

import h5py
import numpy as np


def text(value):
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def show(value):
    if isinstance(value, (float, np.floating)):
        return float(value).hex()
    if isinstance(value, (bytes, np.bytes_)):
        return text(value)
    return str(value)


def read(path):
    with h5py.File(path, "r") as f:
        return f["results"][()]


def by_id(rows):
    return sorted(rows, key=lambda r: text(r["task_id"]))


def results(rows):
    # the float accuracy too: each rank evaluates a share of the test images
    return "".join(" ".join(show(r[c]) for c in ("task_id", "status", "float_top1", "float_top5",
                                                 "quant_top1", "quant_top5", "quant_sparsity",
                                                 "codes_hash")) + "\n"
                   for r in by_id(rows))


def stamps(rows):
    return "".join(f"{text(r['task_id'])} {show(r['finished_at'])}\n" for r in by_id(rows)
                   if text(r["status"]) == "done")


REPORTS = {"results": results, "stamps": stamps}


def main(argv):
    if len(argv) < 3:
        print(__doc__)
        return 2
    outputs = {}
    for flag in ("--results", "--stamps"):
        if flag in argv:
            at = argv.index(flag)
            outputs[flag[2:]] = argv[at + 1]
            del argv[at:at + 2]
    command, path = argv[1], argv[2]
    try:
        rows = read(path)
    except Exception as e:  # an unreadable file is an answer too
        print(f"rows.py: cannot read {path}: {e}")
        return 2
    if command == "count":
        print(len(rows))
    elif command in ("results", "stamps"):
        sys.stdout.write(REPORTS[command](rows))
    elif command == "dump":
        for r in by_id(rows):
            print(" ".join(f"{name}={show(r[name])}" for name in rows.dtype.names))
    elif command == "column":
        for r in by_id(rows):
            print(text(r["task_id"]), show(r[argv[3]]))
    elif command == "check":
        problems = []
        ids = [text(r["task_id"]) for r in rows]
        for task in sorted(set(ids)):
            if ids.count(task) != 1:
                problems.append(f"task {task} has {ids.count(task)} rows")
        for r in rows:
            if text(r["status"]) != "done":
                problems.append(f"task {text(r['task_id'])} is {text(r['status'])!r}: "
                                f"{text(r['message'])}")
        if len(argv) > 3:
            with open(argv[3]) as f:
                want = {line.strip() for line in f if line.strip()}
            for task in sorted(want - set(ids)):
                problems.append(f"task {task} is missing")
            for task in sorted(set(ids) - want):
                problems.append(f"task {task} is not a task of the job")
        for p in problems:
            print(p)
        for name, out in outputs.items():
            with open(out, "w") as f:
                f.write(REPORTS[name](rows))
        return 1 if problems else 0
    else:
        print(f"rows.py: unknown command {command}")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
