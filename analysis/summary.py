"""The summary table: the best configuration per method and bit width, and its drop
from float."""

import math

import pandas as pd

from .results import file_info


def pick_best(frame):
    """The row with the highest quantized top-1 (ties: higher top-5, then the
    smaller scalar, then the smaller lambda)."""
    order = frame.sort_values(["quant_top1", "quant_top5", "mlp_scalar", "cnn_scalar",
                               "reg_lambda"], ascending=[False, False, True, True, True],
                              kind="stable")
    return order.iloc[0]


def best_per_bits(results, by=("source", "method", "bits")):
    """One row per (source, method, bits): the best done task, with the number of
    done tasks in the group and the lowest top-1 among them."""
    done = results[results["done"]]
    rows = []
    for key, group in done.groupby(list(by), sort=True):
        best = pick_best(group)
        row = dict(zip(by, key))
        row.update(
            tasks=len(group),
            task_id=best["task_id"],
            mlp_scalar=best["mlp_scalar"],
            cnn_scalar=best["cnn_scalar"],
            quantizer=best["quantizer"],
            reg_lambda=best["reg_lambda"],
            quant_top1=best["quant_top1"],
            drop_top1=best["drop_top1"],
            quant_top5=best["quant_top5"],
            drop_top5=best["drop_top5"],
            quant_sparsity=best["quant_sparsity"],
            worst_top1=group["quant_top1"].min(),
        )
        rows.append(row)
    columns = [*by, "tasks", "task_id", "mlp_scalar", "cnn_scalar", "quantizer", "reg_lambda",
               "quant_top1", "drop_top1", "quant_top5", "drop_top5", "quant_sparsity",
               "worst_top1"]
    out = pd.DataFrame(rows, columns=columns)
    # files in the order given, GPFQ before MSQ, bits ascending
    keys = {}
    if "source" in out:
        order = {s: i for i, s in enumerate(results["source"].unique())}
        keys["_s"] = out["source"].map(order)
    if "method" in out:
        keys["_m"] = out["method"].map({"gpfq": 0, "msq": 1}).fillna(2)
    if "bits" in out:
        keys["_b"] = out["bits"]
    if keys:
        out = out.assign(**keys).sort_values(list(keys), kind="stable").drop(columns=list(keys))
    return out.reset_index(drop=True)


def _pct(x):
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}%"


def _points(x):
    return "-" if isinstance(x, float) and math.isnan(x) else f"{100 * x:+.2f}"


def _scalar(mlp, cnn):
    return f"{mlp:g}" if mlp == cnn else f"{mlp:g}/{cnn:g}"


def format_summary(results):
    """The summary as text, one block per results file."""
    lines = []
    best = best_per_bits(results)
    for source, r in results.groupby("source", sort=False):
        n, done = len(r), int(r["done"].sum())
        model = r["model"].iloc[0] if n else ""
        dataset = r["dataset"].iloc[0] if n else ""
        what = f"{model} on {dataset}, " if model else ""
        lines.append(f"{source}: {what}{n} task(s), {done} done, {n - done} failed")
        if not done:
            lines.append("  no finished task")
            lines.append("")
            continue
        d = r[r["done"]]
        calib = ", ".join(f"{v}" for v in sorted(d["calib_images"].unique()))
        lines.append(f"  float top-1 {_pct(d['float_top1'].iloc[0])}, "
                     f"top-5 {_pct(d['float_top5'].iloc[0])}; calibration images {calib}")
        b = best[best["source"] == source]
        table = pd.DataFrame({
            "method": b["method"],
            "bits": b["bits"],
            "tasks": b["tasks"],
            "best scalar": [_scalar(m, c) for m, c in zip(b["mlp_scalar"], b["cnn_scalar"])],
            "quantizer": b["quantizer"],
            "lambda": b["reg_lambda"].map(lambda x: f"{x:g}"),
            "top-1": b["quant_top1"].map(_pct),
            "drop": b["drop_top1"].map(_points),
            "top-5": b["quant_top5"].map(_pct),
            "drop5": b["drop_top5"].map(_points),
            "sparsity": b["quant_sparsity"].map(_pct),
            "worst top-1": b["worst_top1"].map(_pct),
        })
        lines.append("  best configuration per method and bits (drop: quantized - float in "
                     "points; worst: lowest top-1 of the group)")
        lines.extend("  " + line for line in table.to_string(index=False).splitlines())
        # GPFQ against MSQ at each bit width, both at their best configuration
        g = b[b["method"] == "gpfq"].set_index("bits")["quant_top1"]
        m = b[b["method"] == "msq"].set_index("bits")["quant_top1"]
        common = g.index.intersection(m.index)
        if len(common):
            gains = ", ".join(f"{bits} bit{'s' if bits != 1 else ''} {_points(g[bits] - m[bits])}"
                              for bits in common)
            lines.append(f"  GPFQ - MSQ (best top-1 of each, in points): {gains}")
        failed = r[~r["done"]]
        if len(failed):
            lines.append("  failed tasks:")
            for _, t in failed.head(5).iterrows():
                lines.append(f"    {t['task_id']} {t['method']} b{t['bits']} "
                             f"s{_scalar(t['mlp_scalar'], t['cnn_scalar'])} {t['quantizer']} "
                             f"lambda {t['reg_lambda']:g}: {t['message']}")
            if len(failed) > 5:
                lines.append(f"    ... and {len(failed) - 5} more")
        info = file_info(source)
        if info.get("command"):
            lines.append(f"  last run: {info['command']} ({info.get('ranks', '?')} rank(s), "
                         f"started {info.get('started', '?')})")
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"
