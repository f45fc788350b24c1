"""PNG plots of a run (matplotlib, imported lazily; figures drawn without pyplot, so the caller's
backend and open figures are left alone): time vs n, fidelity vs time, and learning-to-sort exact
match vs n."""

from __future__ import annotations

from pathlib import Path

from sodeep.benchmark.report import REFERENCE_LENGTH, mean_sd, reference_batch
from sodeep.files import atomic_write


def _figure(**settings):
    """A figure and its axes, outside pyplot (no backend switched, nothing to close)."""
    from matplotlib.figure import Figure

    figure = Figure(**settings)
    return figure, figure.subplots()


#: Line styles taken in turn after each round of twenty colours, so that no two of up to 80
#: lines look alike.
LINE_STYLES = ("-", "--", ":", "-.")


def _colours() -> list:
    """Matplotlib's twenty ``tab20`` colours, its ten dark shades first."""
    import matplotlib

    shades = matplotlib.colormaps["tab20"].colors
    return [*shades[0::2], *shades[1::2]]


def _style(index: int, label: str = "") -> dict:
    """Colour and line style of the ``index``-th line of a plot, all distinct up to 80 lines; the
    library's own rankers (labels starting ``sodeep``) are drawn thicker, on top."""
    colours = _colours()
    style = {"color": colours[index % len(colours)], "linestyle": LINE_STYLES[(index // len(colours)) % 4]}
    if label.startswith("sodeep"):
        style |= {"linewidth": 2.4, "zorder": 3}
    return style


def plot_speed(rows: list[dict], path: Path) -> Path | None:
    """Forward+backward time vs n at the reference batch (32), log-log, one line per ranker."""
    batch = reference_batch(rows)
    selected = [row for row in rows if row["batch"] == batch and row["mode"] == "forward+backward"]
    if not selected:
        return None
    figure, axes = _figure(figsize=(7, 4.5))
    for index, ranker in enumerate(dict.fromkeys(row["ranker"] for row in selected)):
        points = sorted((row["n"], row["seconds"] * 1e3) for row in selected if row["ranker"] == ranker)
        axes.plot(*zip(*points), marker="o", markersize=3, label=ranker, **_style(index, ranker))
    axes.set(xscale="log", yscale="log", xlabel="n", ylabel="ms per call", title=f"forward+backward, B={batch}")
    # Beside the axes: inside, it would hide the points of rankers measured at one n only.
    axes.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return _save(figure, path)


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
    figure, axes = _figure(figsize=(8, 4.5))
    for index, (ranker, time, gap) in enumerate(points):
        marker = "os^D"[(index // len(_colours())) % 4]
        axes.scatter(time, max(gap, 1e-7), color=_style(index)["color"], marker=marker, label=ranker)
    # A legend, not labels beside the points: points of similar speed and fidelity overlap.
    axes.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    axes.set(xscale="log", yscale="log", xlabel=f"forward ms (B={batch}, n={n})",
             ylabel="1 - Spearman (mean over distributions)",
             title="fidelity vs time (1 - Spearman below 1e-7 is drawn at 1e-7)")  # fmt: skip
    return _save(figure, path)


def plot_sorting(summary: list[dict], path: Path) -> Path | None:
    """Test exact match vs n at each family's best setting, mean ± sd over seeds (no bar from one
    seed)."""
    if not summary:
        return None
    figure, axes = _figure(figsize=(7, 4.5))
    families = list(dict.fromkeys(entry["family"] for entry in summary))
    for index, family in enumerate(families):
        entries = sorted((entry for entry in summary if entry["family"] == family), key=lambda entry: entry["n"])
        dodge = 1 + 0.015 * (index - (len(families) - 1) / 2)  # equal values side by side, not hidden
        axes.errorbar(
            [entry["n"] * dodge for entry in entries],
            [entry["best"]["exact_match"] for entry in entries],
            yerr=[entry["best"]["exact_match_sd"] for entry in entries],
            marker="o", markersize=3, capsize=2, label=family, **_style(index, family),
        )  # fmt: skip
    lengths = sorted({entry["n"] for entry in summary})
    axes.set_xticks(lengths, [str(n) for n in lengths])  # the lengths trained, not fractions of the dodge
    axes.set(xlabel="n (numbers per sequence)", ylabel="test exact match", title="learning to sort, best setting")
    axes.legend(fontsize=7)
    return _save(figure, path)


def _save(figure, path: Path) -> Path:
    figure.tight_layout()
    # "tight": the saved figure grows to hold a legend outside the axes and long labels.
    atomic_write(path, lambda stream: figure.savefig(stream, format="png", dpi=120, bbox_inches="tight"))
    return path
