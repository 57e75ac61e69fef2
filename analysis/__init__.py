"""Analysis of gpfq sweep results files: frames, summary, CSV export and plots.

    import analysis
    results, layers = analysis.load(["results/fashion_lenet5_scalar.h5"])
    print(analysis.format_summary(results))
    fig = analysis.plot_scalar(results)

Command line: `/usr/bin/python3 -m analysis --help`; see analysis/walkthrough.md.
Needs numpy, pandas, h5py and matplotlib (Debian's /usr/bin/python3).
"""

# name -> submodule. Imported on first use, so that `import analysis` does not load
# matplotlib until a plot is asked for, and `python3 -m analysis` can explain a
# missing library instead of failing with a traceback.
_EXPORTS = {
    "load": "results", "ResultsError": "results", "NoDataError": "results",
    "job_info": "results", "parse_job": "results", "RESULTS_DTYPES": "results",
    "LAYERS_DTYPES": "results",
    "format_summary": "summary", "best_per_bits": "summary",
    "RESEARCH_COLUMNS": "export", "research_frame": "export", "write_research_csv": "export",
    "write_tidy_csv": "export", "read_tidy_csv": "export",
    "PLOTS": "plots", "plot_scalar": "plots", "plot_best": "plots", "plot_bits": "plots",
    "plot_lambda": "plots", "plot_layers": "plots", "save_figure": "plots",
}

__all__ = list(_EXPORTS)


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'analysis' has no attribute '{name}'")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted([*globals(), *_EXPORTS])
