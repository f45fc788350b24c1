"""PNG plots of a run (matplotlib, imported lazily, Agg backend): time vs n, fidelity vs time,
and learning-to-sort exact match vs n."""

from __future__ import annotations

from pathlib import Path

from sodeep.benchmark.report import REFERENCE_LENGTH, mean_sd, reference_batch


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    return pyplot


#: Line styles taken in turn after each round of matplotlib's 10 colours, so that no two of up to
#: 40 lines look alike.
LINE_STYLES = ("-", "--", ":", "-.")


def _style(index: int) -> dict:
    """Colour and line style of the ``index``-th line of a plot: all distinct up to 40 lines."""
    return {"color": f"C{index % 10}", "linestyle": LINE_STYLES[(index // 10) % len(LINE_STYLES)]}


def plot_speed(rows: list[dict], path: Path) -> Path | None:
    """Forward+backward time vs n at the reference batch (32), log-log, one line per ranker."""
    batch = reference_batch(rows)
    selected = [row for row in rows if row["batch"] == batch and row["mode"] == "forward+backward"]
    if not selected:
        return None
    pyplot = _pyplot()
    figure, axes = pyplot.subplots(figsize=(7, 4.5))
    for index, ranker in enumerate(dict.fromkeys(row["ranker"] for row in selected)):
        points = sorted((row["n"], row["seconds"] * 1e3) for row in selected if row["ranker"] == ranker)
        axes.plot(*zip(*points), marker="o", markersize=3, label=ranker, **_style(index))
    axes.set(xscale="log", yscale="log", xlabel="n", ylabel="ms per call", title=f"forward+backward, B={batch}")
    axes.legend(fontsize=6, ncol=2)
    return _save(figure, pyplot, path)


def plot_fidelity_vs_time(fidelity: list[dict], speed: list[dict], path: Path) -> Path | None:
    """Mean Spearman over distributions vs forward time, at n=100 (or the nearest length), B=32."""
    if not fidelity or not speed:
        return None
    n = min({row["n"] for row in fidelity}, key=lambda length: abs(length - REFERENCE_LENGTH))
    batch = reference_batch(speed)
    seconds = {
        row["ranker"]: row["seconds"] * 1e3
        for row in speed
        if row["n"] == n and row["mode"] == "forward" and row["batch"] == batch
    }
    points = []
    for ranker in dict.fromkeys(row["ranker"] for row in fidelity if row["n"] == n):
        if ranker in seconds:
            spearman = mean_sd([row["spearman"] for row in fidelity if row["ranker"] == ranker and row["n"] == n])[0]
            points.append((ranker, seconds[ranker], 1 - spearman))
    if not points:
        return None
    pyplot = _pyplot()
    figure, axes = pyplot.subplots(figsize=(7, 4.5))
    for index, (ranker, time, gap) in enumerate(points):
        axes.scatter(time, max(gap, 1e-7), color=_style(index)["color"], marker="os^D"[(index // 10) % 4])
        axes.annotate(ranker, (time, max(gap, 1e-7)), fontsize=6)
    axes.set(xscale="log", yscale="log", xlabel=f"forward ms (B={batch}, n={n})",
             ylabel="1 - Spearman (mean over distributions)", title="fidelity vs time")  # fmt: skip
    return _save(figure, pyplot, path)


def plot_sorting(summary: list[dict], path: Path) -> Path | None:
    """Test exact match vs n at each family's best setting, mean ± sd over seeds."""
    if not summary:
        return None
    pyplot = _pyplot()
    figure, axes = pyplot.subplots(figsize=(7, 4.5))
    for index, family in enumerate(dict.fromkeys(entry["family"] for entry in summary)):
        entries = sorted((entry for entry in summary if entry["family"] == family), key=lambda entry: entry["n"])
        axes.errorbar(
            [entry["n"] for entry in entries],
            [entry["best"]["exact_match"] for entry in entries],
            yerr=[entry["best"]["exact_match_sd"] for entry in entries],
            marker="o", markersize=3, capsize=2, label=family, **_style(index),
        )  # fmt: skip
    axes.set(xlabel="n (numbers per sequence)", ylabel="test exact match", title="learning to sort, best setting")
    axes.legend(fontsize=7)
    return _save(figure, pyplot, path)


def _save(figure, pyplot, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    pyplot.close(figure)
    return path
