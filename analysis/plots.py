"""Figures of a sweep's results. Every function takes the frames of load() and
returns a matplotlib Figure, or raises NoDataError (with the reason) when the
results hold nothing to draw, rather than drawing an empty figure."""

import os

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker as ticker  # noqa: E402
import numpy as np  # noqa: E402

from .results import NoDataError  # noqa: E402
from .summary import pick_best  # noqa: E402

STYLE = {
    "figure.dpi": 100,
    "savefig.dpi": 100,
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "axes.grid": True,
    "grid.alpha": 0.35,
    "grid.linestyle": "-",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "svg.hashsalt": "gpfq",  # stable SVG ids
}

METHOD_STYLE = {"gpfq": dict(linestyle="-", marker="o"), "msq": dict(linestyle="--", marker="s")}
METHOD_LABEL = {"gpfq": "GPFQ", "msq": "MSQ"}
REG_COLOR = {"L1": "tab:blue", "L0": "tab:orange"}
FLOAT_STYLE = dict(color="0.35", linestyle=":", linewidth=1.2)


def _bits(bits):
    return f"{bits} bit" if bits == 1 else f"{bits} bits"


def _done(results):
    return results[results["done"]]


def _multi_source(frame):
    return frame["source"].nunique() > 1


def _source_tag(frame, source):
    """A short label for a file when several are plotted together."""
    return f" [{os.path.splitext(os.path.basename(source))[0]}]" if _multi_source(frame) else ""


def _title(results, what):
    models = [m for m in results["model"].unique() if m]
    datasets = [d for d in results["dataset"].unique() if d]
    on = ""
    if models:
        on = f": {', '.join(models)}"
        if datasets:
            on += f" on {', '.join(datasets)}"
    return f"{what}{on}"


def _float_lines(ax, frame, column, label=True):
    """A horizontal line at the float accuracy of each file."""
    for source, g in frame.groupby("source", sort=False):
        value = 100 * g[column].iloc[0]
        ax.axhline(value, **FLOAT_STYLE,
                   label=(f"float {value:.2f}%{_source_tag(frame, source)}" if label else None))


def _bits_colors(bits):
    cmap = plt.get_cmap("tab10")
    return {b: cmap(i % 10) for i, b in enumerate(sorted(bits))}


def _scalar_frame(results, x):
    d = _done(results)
    if not len(d):
        raise NoDataError("no finished task in the results")
    d = d[np.isfinite(d[x])]
    if not len(d):
        raise NoDataError(f"no task has a single alphabet scalar ({x} is NaN where "
                          "mlp_scalar and cnn_scalar differ); try x='mlp_scalar'")
    # the scalar study is without a regularizer; use regularized tasks only if
    # there is nothing else
    plain = d[d["quantizer"] == "nearest"]
    if len(plain):
        d = plain
    counts = d.groupby(["source", "method", "bits"])[x].nunique()
    if counts.max() < 2:
        values = ", ".join(f"{v:g}" for v in sorted(d[x].unique()))
        raise NoDataError(f"every method and bit width was run at one scalar only ({values}): "
                          "nothing to plot against the scalar "
                          "(sweep a range, e.g. -s 1.0:2.0:0.05)")
    return d


def _series(d, x):
    """(source, method, bits) -> frame with one row per x (the mean of repeats,
    e.g. seeds or percentiles), sorted by x."""
    out = {}
    for key, g in d.groupby(["source", "method", "bits"], sort=False):
        agg = g.groupby(x, as_index=False)[["quant_top1", "quant_top5"]].mean()
        out[key] = agg.sort_values(x)
    order = {"gpfq": 0, "msq": 1}
    return dict(sorted(out.items(), key=lambda kv: (kv[0][0], order.get(kv[0][1], 2), kv[0][2])))


def _mark_best(ax, g, x, color, method, annotate):
    best = g.loc[g["quant_top1"].idxmax()]
    bx, by = best[x], 100 * best["quant_top1"]
    ax.plot([bx], [by], marker="*", markersize=14, color=color,
            markerfacecolor=color if method == "gpfq" else "white", markeredgewidth=1.2,
            linestyle="none", zorder=5)
    if annotate:
        ax.annotate(f"best {METHOD_LABEL.get(method, method)}: s={bx:g}, {by:.2f}%", (bx, by),
                    textcoords="offset points", xytext=(0, 9), ha="center", fontsize=8,
                    color=color, bbox=dict(boxstyle="round,pad=0.2", fc="white", ec="none",
                                           alpha=0.8))
    return best


def plot_scalar(results, x="scalar", mark_best=True):
    """Top-1 and top-5 against the alphabet scalar, one line per bit width (GPFQ
    solid, MSQ dashed), the float accuracy as a dotted line, and the best scalar
    per method and bit width marked with a star (filled: GPFQ, open: MSQ).
    Tasks without a regularizer are used when there are any."""
    d = _scalar_frame(results, x)
    series = _series(d, x)
    colors = _bits_colors(d["bits"].unique())
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), constrained_layout=True)
        for ax, col, name in zip(axes, ["quant_top1", "quant_top5"], ["top-1", "top-5"]):
            for (source, method, bits), g in series.items():
                label = f"{METHOD_LABEL.get(method, method)} {_bits(bits)}{_source_tag(d, source)}"
                ax.plot(g[x], 100 * g[col], color=colors[bits], markersize=3.5, linewidth=1.4,
                        label=label, **METHOD_STYLE.get(method, {}))
                if mark_best and col == "quant_top1":
                    _mark_best(ax, g, x, colors[bits], method, annotate=False)
            _float_lines(ax, d, col.replace("quant", "float"))
            ax.set_xlabel("alphabet scalar" if x == "scalar" else x)
            ax.set_ylabel(f"quantized {name} accuracy (%)")
            ax.set_title(f"{name} against the alphabet scalar")
        if mark_best:
            axes[0].plot([], [], marker="*", markersize=10, color="0.3", linestyle="none",
                         label="best scalar")
        axes[0].legend(loc="best")
        fig.suptitle(_title(d, "GPFQ alphabet scalar study"))
    return fig


def plot_best(results, x="scalar"):
    """The best configuration per bit width on the scalar plot: top-1 against the
    scalar, one panel per bit width, GPFQ and MSQ, the best scalar of each starred
    and annotated with its accuracy and its drop from float."""
    d = _scalar_frame(results, x)
    series = _series(d, x)
    bits_list = sorted(d["bits"].unique())
    colors = {"gpfq": "tab:blue", "msq": "tab:red"}
    ncols = min(len(bits_list), 3)
    nrows = (len(bits_list) + ncols - 1) // ncols
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(nrows, ncols, figsize=(max(7.0, 4.6 * ncols), 3.9 * nrows),
                                 squeeze=False, constrained_layout=True)
        for ax in axes.flat[len(bits_list):]:
            ax.set_visible(False)
        for ax, bits in zip(axes.flat, bits_list):
            for (source, method, b), g in series.items():
                if b != bits:
                    continue
                color = colors.get(method, "0.3")
                line, = ax.plot(g[x], 100 * g["quant_top1"], color=color, markersize=3.5,
                                **METHOD_STYLE.get(method, {}))
                best = _mark_best(ax, g, x, color, method, annotate=False)
                ref = d[(d["source"] == source)]["float_top1"].iloc[0]
                line.set_label(f"{METHOD_LABEL.get(method, method)}{_source_tag(d, source)}: "
                               f"best s={best[x]:g}, {100 * best['quant_top1']:.2f}% "
                               f"({100 * (best['quant_top1'] - ref):+.2f})")
            _float_lines(ax, d[d["bits"] == bits], "float_top1")
            ax.set_title(_bits(bits))
            ax.set_xlabel("alphabet scalar" if x == "scalar" else x)
            ax.set_ylabel("quantized top-1 accuracy (%)")
            ax.legend(loc="best")
        fig.suptitle(_title(d, "Best scalar per bit width") + "\nstar: the best scalar; "
                     "in brackets: its drop from float, in points")
    return fig


def plot_bits(results):
    """Top-1 and top-5 against bits, one line per method, with the float
    accuracy. Where a bit width has several configurations (scalars,
    regularizers), its best top-1 is plotted."""
    d = _done(results)
    if not len(d):
        raise NoDataError("no finished task in the results")
    if d["bits"].nunique() < 2:
        raise NoDataError(f"every task uses {d['bits'].iloc[0]} bits: nothing to plot against "
                          "bits (sweep several, e.g. -b 1:8:1)")
    several = d.groupby(["source", "method", "bits"]).size().max() > 1
    colors = {"gpfq": "tab:blue", "msq": "tab:red"}
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), constrained_layout=True)
        for (source, method), g in d.groupby(["source", "method"], sort=False):
            best = g.groupby("bits").apply(pick_best).reset_index(drop=True).sort_values("bits")
            for ax, col in zip(axes, ["quant_top1", "quant_top5"]):
                ax.plot(best["bits"], 100 * best[col], color=colors.get(method, "0.3"),
                        markersize=4, linewidth=1.5,
                        label=f"{METHOD_LABEL.get(method, method)}{_source_tag(d, source)}",
                        **METHOD_STYLE.get(method, {}))
        for ax, name in zip(axes, ["top-1", "top-5"]):
            _float_lines(ax, d, f"float_{name.replace('-', '')}")
            ax.set_xlabel("bits per weight")
            ax.set_ylabel(f"quantized {name} accuracy (%)")
            ax.set_xticks(sorted(d["bits"].unique()))
            ax.grid(True, which="both")
            ax.set_title(f"{name} against bits" + (" (best configuration per bit width)"
                                                   if several else ""))
            ax.legend(loc="best")
        scalars = sorted(d["mlp_scalar"].unique())
        note = f", scalar {scalars[0]:g}" if len(scalars) == 1 else ""
        fig.suptitle(_title(d, f"Accuracy against bits{note}"))
    return fig


def plot_lambda(results):
    """Sparsity and accuracy against the regularizer's lambda, one line per
    regularizer (and per method / bits / scalar when several were run), plus the
    trade-off of sparsity against top-1. Tasks without a regularizer at the same
    configuration are drawn at lambda 0 (black)."""
    d = _done(results)
    reg = d[d["quantizer"].isin(["L1", "L0"])]
    if not len(reg):
        raise NoDataError("no finished task with a regularizer (L1 or L0): nothing to plot "
                          "against lambda (sweep e.g. -reg L1,L0 -l 0.005,0.01,0.02)")
    keys = ["source", "method", "bits", "mlp_scalar", "cnn_scalar"]
    if reg.groupby(keys + ["quantizer"])["reg_lambda"].nunique().max() < 2:
        raise NoDataError("every regularized configuration was run at one lambda only: "
                          "nothing to plot against lambda")
    groups = list(reg.groupby(keys, sort=False))
    several = len(groups) > 1
    styles = ["-", "--", "-.", ":"]
    markers = ["o", "s", "^", "D", "v"]
    failed = results[~results["done"] & results["quantizer"].isin(["L1", "L0"])]
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, 3, figsize=(13, 4.2), constrained_layout=True)
        base_labelled = False
        for i, (key, g) in enumerate(groups):
            source, method, bits, mlp, cnn = key
            scal = f"{mlp:g}" if mlp == cnn else f"{mlp:g}/{cnn:g}"
            what = (f", {METHOD_LABEL.get(method, method)} {_bits(bits)} s={scal}"
                    f"{_source_tag(d, source)}") if several else ""
            ls, mk = styles[i % len(styles)], markers[i % len(markers)]
            for q, h in g.groupby("quantizer"):
                h = h.groupby("reg_lambda", as_index=False)[
                    ["quant_sparsity", "quant_top1"]].mean().sort_values("reg_lambda")
                kw = dict(color=REG_COLOR.get(q, "0.3"), linestyle=ls, marker=mk, markersize=4,
                          label=f"{q}{what}")
                axes[0].plot(h["reg_lambda"], 100 * h["quant_sparsity"], **kw)
                axes[1].plot(h["reg_lambda"], 100 * h["quant_top1"], **kw)
                axes[2].plot(100 * h["quant_sparsity"], 100 * h["quant_top1"], **kw)
            base = d[(d["quantizer"] == "nearest")]
            for k, v in zip(keys, key):
                base = base[base[k] == v]
            if len(base):
                s, t = 100 * base["quant_sparsity"].mean(), 100 * base["quant_top1"].mean()
                kw = dict(color="black", marker="*", markersize=10, linestyle="none",
                          label=None if base_labelled else "no regularizer")
                axes[0].plot([0], [s], **kw)
                axes[1].plot([0], [t], **kw)
                axes[2].plot([s], [t], **kw)
                base_labelled = True
        _float_lines(axes[1], d, "float_top1")
        _float_lines(axes[2], d, "float_top1", label=False)
        axes[0].set(xlabel="lambda", ylabel="quantized sparsity (% zero weights)",
                    title="sparsity against lambda")
        axes[1].set(xlabel="lambda", ylabel="quantized top-1 accuracy (%)",
                    title="top-1 against lambda")
        axes[2].set(xlabel="quantized sparsity (% zero weights)",
                    ylabel="quantized top-1 accuracy (%)", title="top-1 against sparsity")
        axes[0].legend(loc="best")
        axes[1].legend(loc="best")
        suffix = f" ({len(failed)} failed task(s) not shown)" if len(failed) else ""
        fig.suptitle(_title(d, "Regularizers: sparsity and accuracy against lambda") + suffix)
    return fig


def _layer_tasks(results, layers, tasks):
    have = layers[np.isfinite(layers["relative_error"])]
    if tasks:
        chosen = []
        for t in tasks:
            match = results[results["task_id"].str.startswith(t)]
            if not len(match):
                raise NoDataError(f"no task id starts with '{t}'")
            if len(match) > 1 and match["task_id"].nunique() > 1:
                raise NoDataError(f"task id prefix '{t}' is ambiguous "
                                  f"({', '.join(match['task_id'].head(4))}, ...)")
            row = match.iloc[0]
            if not len(have[(have["source"] == row["source"]) &
                            (have["task_id"] == row["task_id"])]):
                raise NoDataError(f"task {row['task_id']} ({row['method']}, {row['status']}) "
                                  "has no per-layer error (MSQ and failed tasks have none)")
            chosen.append(row)
        return chosen
    d = _done(results)
    d = d[d["method"] == "gpfq"]
    with_layers = set(zip(have["source"], have["task_id"]))
    d = d[[k in with_layers for k in zip(d["source"], d["task_id"])]]
    if not len(d):
        raise NoDataError("no finished GPFQ task has per-layer errors in /layers")
    return [pick_best(g) for _, g in d.groupby(["source", "bits"], sort=False)]


def plot_layers(results, layers, tasks=None):
    """Per-layer relative error ||XW^T - YQ^T|| / ||XW^T|| and share of zero codes,
    for the best GPFQ task per bit width, or for the tasks given (task ids or
    unique prefixes)."""
    chosen = _layer_tasks(results, layers, tasks)
    chosen = sorted(chosen, key=lambda r: (r["source"], r["bits"]))
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, 2, figsize=(12 if len(chosen) > 3 else 10, 4.2),
                                 constrained_layout=True)
        names = None
        cmap = plt.get_cmap("tab10")
        for i, row in enumerate(chosen):
            lay = layers[(layers["source"] == row["source"]) &
                         (layers["task_id"] == row["task_id"])].sort_values("layer")
            if names is None:
                names = list(lay["name"])
            elif list(lay["name"]) != names:
                names = []
            scal = (f"{row['mlp_scalar']:g}" if row["mlp_scalar"] == row["cnn_scalar"]
                    else f"{row['mlp_scalar']:g}/{row['cnn_scalar']:g}")
            reg = "" if row["quantizer"] == "nearest" else \
                f" {row['quantizer']} {row['reg_lambda']:g}"
            label = (f"{_bits(row['bits'])} s={scal}{reg}: top-1 {100 * row['quant_top1']:.2f}%"
                     f"{_source_tag(results, row['source'])}")
            kw = dict(color=cmap(i % 10), marker="o", markersize=4, label=label,
                      **({"linestyle": "--"} if row["method"] == "msq" else {}))
            axes[0].plot(lay["layer"], 100 * lay["relative_error"], **kw)
            axes[1].plot(lay["layer"], 100 * lay["sparsity"], **kw)
        all_layers = sorted(layers["layer"].unique())
        for ax in axes:
            ax.set_xticks(all_layers)
            if names:
                ax.set_xticklabels(names, rotation=30 if len(names) > 6 else 0,
                                   ha="right" if len(names) > 6 else "center")
            ax.set_xlabel("layer")
        axes[0].set(ylabel="relative error (%)",
                    title="relative error ||XW$^T$ - YQ$^T$||$_F$ / ||XW$^T$||$_F$")
        axes[1].set(ylabel="zero codes (%)", title="sparsity of the quantized layer")
        err = 100 * layers["relative_error"][np.isfinite(layers["relative_error"])]
        if len(chosen) > 1 and len(err) and err.min() > 0 and err.max() / err.min() > 20:
            axes[0].set_yscale("log")
            axes[0].yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
            axes[0].yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
            axes[0].yaxis.set_minor_formatter(ticker.NullFormatter())
            axes[0].set_ylabel("relative error (%, log scale)")
        else:
            axes[0].set_ylim(bottom=0)
        if len(chosen) > 3:
            axes[1].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0))
        else:
            axes[0].legend(loc="best")
        what = "chosen tasks" if tasks else "best GPFQ task per bit width"
        fig.suptitle(_title(results[results["source"].isin([r["source"] for r in chosen])],
                            f"Per-layer error, {what}"))
    return fig


# kind -> (function, whether it takes the layers frame); analysis.cli.KINDS
# describes them
PLOTS = {
    "scalar": (plot_scalar, False),
    "best": (plot_best, False),
    "bits": (plot_bits, False),
    "lambda": (plot_lambda, False),
    "layers": (plot_layers, True),
}


def save_figure(fig, directory, name, formats=("png", "svg"), dpi=100, colors=None):
    """Writes DIRECTORY/NAME.png (and .svg...) and closes the figure; returns the
    paths. colors=N stores the PNG with a palette of N colors: a third of the size
    or less, for figures kept under version control."""
    os.makedirs(directory, exist_ok=True)
    paths = []
    for fmt in formats:
        path = os.path.join(directory, f"{name}.{fmt}")
        metadata = {"Date": None} if fmt == "svg" else {"Software": None}
        fig.savefig(path, format=fmt, dpi=dpi, metadata=metadata)
        if fmt == "png" and colors:
            from PIL import Image  # matplotlib's own dependency

            with Image.open(path) as im:
                small = im.convert("RGB").quantize(colors=colors,
                                                   method=Image.Quantize.MEDIANCUT)
            small.save(path, optimize=True)
        paths.append(path)
    plt.close(fig)
    return paths
