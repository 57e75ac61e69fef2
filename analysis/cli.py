"""The command line: `python3 -m analysis summary|csv|plot ...`.

Exit codes, as for gpfq: 0 success, 1 a runtime error (a bad results file,
nothing to plot, an unwritable output), 2 bad usage.
"""

import argparse
import os
import sys

from .results import NoDataError, ResultsError, load

PROG = "python3 -m analysis"
EXIT_RUNTIME, EXIT_USAGE = 1, 2

MAIN_HELP = """\
Analysis of gpfq sweep results files (docs/results-format.md): a summary table,
CSV export and figures. Several files may be given; their tasks are combined
(each row keeps its file in the `source` column).

examples:
  python3 -m analysis summary results/fashion_lenet5_scalar.h5
  python3 -m analysis csv --format research -o runs.csv results/fashion_lenet5_scalar.h5
  python3 -m analysis plot scalar -o figures results/fashion_lenet5_scalar.h5
  python3 -m analysis plot all -o figures results/*.h5

Run with Debian's /usr/bin/python3 (numpy, pandas, h5py, matplotlib).
"""


# the plot kinds (analysis.plots.PLOTS draws them); listed here so that --help
# and the other commands do not load matplotlib
KINDS = {
    "scalar": "top-1/top-5 against the scalar, a line per bit width, best starred",
    "best": "top-1 against the scalar per bit width, the best annotated",
    "bits": "top-1/top-5 against bits, a line per method, float reference",
    "lambda": "sparsity and top-1 against lambda, per regularizer",
    "layers": "per-layer relative error of the best GPFQ task per bit width",
}


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _parser():
    p = _Parser(prog=PROG, description=MAIN_HELP,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    s = sub.add_parser(
        "summary", help="best configuration per method and bits, drop from float",
        description="Prints, per results file: the task counts, the float accuracy, the best "
        "configuration (scalar, quantizer, lambda) per method and bit width with its top-1/top-5 "
        "and the drop from float in percentage points, GPFQ against MSQ, and the failed tasks.")
    s.add_argument("files", nargs="+", metavar="FILE", help="sweep results file(s)")

    c = sub.add_parser(
        "csv", help="export as CSV (the research code's log, or every column)",
        description="research: the research code's log columns (Model Name, Dataset, ..., "
        "Fusion, Seed; accuracies as fractions), as `gpfq quantize --log` writes them, for the "
        "done tasks of one method (the log has no method column). tidy: every column of the "
        "frame, one row per task (or per layer with --table layers); "
        "analysis.read_tidy_csv() reads it back with its dtypes.")
    c.add_argument("--format", required=True, choices=["research", "tidy"], dest="fmt")
    c.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="the CSV file to write ('-': standard output)")
    c.add_argument("--method", default="gpfq", choices=["gpfq", "msq", "all"],
                   help="research format: which method's tasks to write (default gpfq)")
    c.add_argument("--table", default="results", choices=["results", "layers"],
                   help="tidy format: one row per task (results, default) or per layer")
    c.add_argument("files", nargs="+", metavar="FILE", help="sweep results file(s)")

    kinds = "\n".join(f"  {k:<7} {v}" for k, v in KINDS.items())
    pl = sub.add_parser(
        "plot", help="figures as PNG and SVG",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=f"Writes DIR/[PREFIX]KIND.png and .svg. Kinds:\n{kinds}\n"
        "  all     every kind the results have data for (the others are skipped\n"
        "          with a message)\n\n"
        "A kind whose data is absent (one scalar, one bit width, no regularizer)\n"
        "draws nothing and exits 1 with the reason.")
    pl.add_argument("kind", choices=[*KINDS, "all"], metavar="KIND",
                    help=f"one of {', '.join(KINDS)}, all")
    pl.add_argument("-o", "--output", required=True, metavar="DIR", help="output directory")
    pl.add_argument("--format", default="png,svg", dest="formats",
                    help="comma-separated image formats (default png,svg)")
    pl.add_argument("--prefix", default="", help="prefix of the file names")
    pl.add_argument("--dpi", type=int, default=100, help="PNG resolution (default 100)")
    pl.add_argument("--colors", type=int, metavar="N",
                    help="store PNGs with a palette of N colors (e.g. 64): files a third "
                    "of the size, for figures kept in git")
    pl.add_argument("--task", action="append", metavar="ID",
                    help="layers: plot this task (an id or a unique prefix; repeatable) "
                    "instead of the best GPFQ task per bit width")
    pl.add_argument("--x", default="scalar", choices=["scalar", "mlp_scalar", "cnn_scalar"],
                    help="scalar, best: the x axis (default scalar: tasks whose MLP and CNN "
                    "scalars are equal)")
    pl.add_argument("files", nargs="+", metavar="FILE", help="sweep results file(s)")
    return p


def _summary(args):
    from .summary import format_summary

    results, _ = load(args.files)
    sys.stdout.write(format_summary(results))
    return 0


def _csv(args):
    from .export import research_frame, write_tidy_csv

    results, layers = load(args.files)
    out = sys.stdout if args.output == "-" else args.output
    log = sys.stderr if args.output == "-" else sys.stdout
    if args.fmt == "research":
        method = None if args.method == "all" else args.method
        frame = research_frame(results, method)
        frame.to_csv(out, index=False)
        left = []
        failed = int((~results["done"]).sum())
        if failed:
            left.append(f"{failed} failed task(s)")
        if method is not None:
            other = results[results["done"] & (results["method"] != method)]
            for m, n in other["method"].value_counts().sort_index().items():
                left.append(f"{n} {m} task(s) (the research format has no method column; "
                            f"--method {m} writes them)")
        print(f"wrote {len(frame)} row(s) to {args.output}", file=log)
        if left:
            print("left out " + "; ".join(left), file=log)
    else:
        frame = layers if args.table == "layers" else results
        write_tidy_csv(frame, out)
        print(f"wrote {len(frame)} row(s), {frame.shape[1]} columns to {args.output}", file=log)
    return 0


def _plot(args):
    from .plots import PLOTS, save_figure

    formats = [f.strip().lower() for f in args.formats.split(",") if f.strip()]
    bad = [f for f in formats if f not in ("png", "svg", "pdf")]
    if not formats or bad:
        print(f"{PROG} plot: error: --format takes png, svg or pdf, comma-separated",
              file=sys.stderr)
        return EXIT_USAGE
    if args.colors is not None and not 2 <= args.colors <= 256:
        print(f"{PROG} plot: error: --colors takes 2 to 256", file=sys.stderr)
        return EXIT_USAGE
    results, layers = load(args.files)
    kinds = list(KINDS) if args.kind == "all" else [args.kind]
    drawn = 0
    for kind in kinds:
        fn, needs_layers = PLOTS[kind]
        try:
            if needs_layers:
                fig = fn(results, layers, tasks=args.task)
            elif kind in ("scalar", "best"):
                fig = fn(results, x=args.x)
            else:
                fig = fn(results)
        except NoDataError as e:
            if args.kind != "all":
                print(f"{PROG} plot {kind}: {e}", file=sys.stderr)
                return EXIT_RUNTIME
            print(f"skipped {kind}: {e}")
            continue
        for path in save_figure(fig, args.output, f"{args.prefix}{kind}", formats, args.dpi,
                                args.colors):
            print(f"wrote {path}")
        drawn += 1
    if not drawn:
        print(f"{PROG} plot all: nothing to draw in {', '.join(args.files)}", file=sys.stderr)
        return EXIT_RUNTIME
    return 0


def main(argv=None):
    args = _parser().parse_args(argv)
    try:
        return {"summary": _summary, "csv": _csv, "plot": _plot}[args.command](args)
    except BrokenPipeError:
        # the reader went away (`... | head`): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (ResultsError, OSError) as e:
        print(f"{PROG} {args.command}: error: {e}", file=sys.stderr)
        return EXIT_RUNTIME
