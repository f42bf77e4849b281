"""Seed-level statistics of benchmark runs, computed with rliable (Agarwal et al., 2021).

A *group* is the runs of one algorithm on one task; its records carry ``eval_curve`` = [(frames,
return), ...]. Scores per group are two numbers per run: the final evaluation return and the AUC
(mean evaluation return over training, trapezoid rule). Per group: mean and IQM with 95%
stratified-bootstrap percentile CIs. Per pair: the probability of improvement P(X > Y) with its CI.
Every bootstrap starts from seed ``SEED``, so a report regenerates identically from the same result
files.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
from rliable import library as rly
from rliable import metrics

SEED = 0
REPS = 5000  # bootstrap resamples (rliable suggests ≥ 2000)
MIN_SEEDS_FOR_VERDICT = 3  # fewer seeds give degenerate bootstrap intervals
METRICS = {"mean": metrics.aggregate_mean, "iqm": metrics.aggregate_iqm}


def _interval_estimates(data: dict, func) -> tuple[dict, dict]:
    """``rly.get_interval_estimates`` with the fixed seed.

    rliable 1.2's stratified bootstrap draws its indices from NumPy's global generator (its
    ``random_state`` argument does not reach them), so the global state is seeded here and restored.
    """
    saved = np.random.get_state()
    np.random.seed(SEED)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="random_state is deprecated", category=FutureWarning)
            return rly.get_interval_estimates(data, func, reps=REPS, random_state=np.random.RandomState(SEED))
    finally:
        np.random.set_state(saved)


def _estimate(scores, func) -> tuple[float, tuple[float, float]]:
    """rliable point estimate and 95% CI of ``func`` on ``scores`` ([runs] array, or a pair of them)."""
    data = (
        {"x": np.asarray(scores, dtype=float)[:, None]}
        if not isinstance(scores, tuple)
        else {"x": [np.asarray(s, dtype=float)[:, None] for s in scores]}
    )
    points, intervals = _interval_estimates(data, func)
    low, high = np.asarray(intervals["x"]).reshape(-1)[:2]
    return float(points["x"]), (float(low), float(high))


def curves(records: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Evaluation curves on a common frame grid: frames [points], returns [runs, points]."""
    length = min(len(r["eval_curve"]) for r in records)
    frames = np.array([f for f, _ in records[0]["eval_curve"][:length]])
    values = np.array([[v for _, v in r["eval_curve"][:length]] for r in records])
    return frames, values


def scores(records: list[dict]) -> dict[str, np.ndarray]:
    """Per-run ``final`` return and ``auc`` (mean evaluation return over training), each [runs]."""
    frames, values = curves(records)
    auc = np.trapezoid(values, frames, axis=1) / (frames[-1] - frames[0]) if len(frames) > 1 else values[:, 0]
    return {"final": values[:, -1], "auc": auc}


def summarize(records: list[dict]) -> dict:
    """Seeds, frames, and for ``final`` and ``auc``: mean, IQM and their 95% CIs (``<score>_ci`` = mean's);
    each run's ``peak`` (its best evaluation), their mean and the mean ``peak_drop`` (peak − final, ≥ 0),
    without CIs."""
    frames, values = curves(records)
    peaks = values.max(axis=1)
    summary: dict = {"seeds": len(records), "frames": int(frames[-1]), "peak_values": [float(v) for v in peaks]}
    summary["peak_mean"] = float(peaks.mean())
    summary["peak_drop_mean"] = float(np.mean(peaks - values[:, -1]))
    for score, values in scores(records).items():
        for name, func in METRICS.items():
            point, interval = _estimate(values, func)
            summary[f"{score}_{name}"] = point
            summary[f"{score}_{name}_ci" if name != "mean" else f"{score}_ci"] = interval
        summary[f"{score}_values"] = [float(v) for v in values]
    if all("wall_seconds" in r for r in records):
        summary["wall_seconds_mean"] = float(np.mean([r["wall_seconds"] for r in records]))
    return summary


def probability_of_improvement(first: dict, second: dict, score: str = "final") -> tuple[float, tuple[float, float]]:
    """P(a run of ``first`` scores higher than one of ``second``) on ``score``, with its 95% CI."""
    pair = (np.array(first[f"{score}_values"]), np.array(second[f"{score}_values"]))
    return _estimate(pair, metrics.probability_of_improvement)


def compare(first: dict, second: dict, score: str = "final") -> str:
    """``win`` / ``tie`` / ``loss`` of ``first`` against ``second``: a win needs the means' 95% CIs apart."""
    ci, other_ci = first[f"{score}_ci"], second[f"{score}_ci"]
    if ci[0] > other_ci[1]:
        return "win"
    if ci[1] < other_ci[0]:
        return "loss"
    return "tie"


def verdict(first: dict, second: dict, score: str = "final", name: str = "STAC") -> str:
    """``first`` against ``second`` on ``score``: the outcome word and the difference of the means."""
    word = {"win": f"{name} wins", "loss": f"{name} loses", "tie": "tie (CIs overlap)"}[compare(first, second, score)]
    mean, other_mean = first[f"{score}_mean"], second[f"{score}_mean"]
    return f"{word}: {mean - other_mean:+.1f} ({mean:.1f} vs {other_mean:.1f})"


def improvement_line(first: dict, second: dict, names: tuple[str, str]) -> str:
    """'P(A > B): final 0.72 [0.40, 0.96], AUC 0.60 [0.28, 0.88]'."""
    parts = []
    for score, label in (("final", "final"), ("auc", "AUC")):
        point, (low, high) = probability_of_improvement(first, second, score)
        parts.append(f"{label} {point:.2f} [{low:.2f}, {high:.2f}]")
    return f"P({names[0]} > {names[1]}): " + ", ".join(parts)


def plot_aggregates(summary: dict[str, dict], tasks: list[str], path: Path, score: str = "final") -> None:
    """One panel per task: IQM and mean of ``score`` with 95% CIs for each group ``<task>/<label>``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(3, len(tasks))
    rows = -(-len(tasks) // columns)
    height = 0.9 + 0.45 * _most_groups(summary, tasks)
    fig, axes = plt.subplots(rows, columns, figsize=(4.6 * columns, height * rows), squeeze=False)
    for ax in axes.flat[len(tasks) :]:
        ax.set_visible(False)
    for ax, task in zip(axes.flat, tasks, strict=False):
        labels = sorted(key.split("/", 1)[1] for key in summary if key.split("/", 1)[0] == task)
        for row, label in enumerate(labels):
            s = summary[f"{task}/{label}"]
            for offset, name, color in ((-0.15, "iqm", "tab:blue"), (0.15, "mean", "tab:orange")):
                low, high = s[f"{score}_{name}_ci" if name != "mean" else f"{score}_ci"]
                ax.plot([low, high], [row + offset] * 2, color=color, lw=5, alpha=0.5, solid_capstyle="butt")
                ax.plot([s[f"{score}_{name}"]], [row + offset], "|", color="black", ms=10)
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
        ax.set_title(task, fontsize=9)
        ax.set_xlabel(f"{'final return' if score == 'final' else 'AUC'} (blue IQM, orange mean; 95% CI)", fontsize=8)
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _most_groups(summary: dict, tasks: list[str]) -> int:
    return max(sum(key.split("/", 1)[0] == task for key in summary) for task in tasks)


def curve_band(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean learning curve and its 95% CI at every evaluation point; ``values`` is [runs, points]."""
    points, intervals = _interval_estimates({"x": np.asarray(values, dtype=float)}, lambda s: s.mean(axis=0))
    return points["x"], np.asarray(intervals["x"])


def plot_curves(groups: dict[str, list[dict]], path: Path) -> None:
    """One panel per task: each group's (``<task>/<label>``) mean learning curve and its 95% CI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({key.split("/")[0] for key in groups})
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        for key in sorted(k for k in groups if k.startswith(task + "/")):
            frames, values = curves(groups[key])
            mean, band = curve_band(values)
            ax.plot(frames, mean, label=f"{key.split('/', 1)[1]} ({len(groups[key])} seeds)")
            ax.fill_between(frames, band[0], band[1], alpha=0.2)
        ax.set_title(task)
        ax.set_xlabel("frames")
        ax.set_ylabel("deterministic return")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def table_rows(summary: dict[str, dict], extra: dict[str, Callable[[dict], str]] | None = None) -> list[str]:
    """Markdown table, a row per group ``<task>/<label>``: seeds, frames, final return mean and IQM with
    their CIs, AUC with its CI, and ``extra`` columns (header → cell from the group's summary)."""
    extra = extra or {}
    header = ["env", "variant", "seeds", "frames", "final mean", "95% CI", "IQM", "IQM 95% CI", "AUC", "AUC 95% CI"]
    rows = ["| " + " | ".join([*header, *extra]) + " |", "|" + " --- |" * (len(header) + len(extra))]
    for key, s in summary.items():
        task, label = key.split("/", 1)
        cells = [
            task, label, str(s["seeds"]), str(s["frames"]), f"{s['final_mean']:.1f}", _interval(s["final_ci"]),
            f"{s['final_iqm']:.1f}", _interval(s["final_iqm_ci"]), f"{s['auc_mean']:.1f}", _interval(s["auc_ci"]),
        ]  # fmt: skip
        rows.append("| " + " | ".join([*cells, *(cell(s) for cell in extra.values())]) + " |")
    return rows


def _interval(ci: tuple[float, float]) -> str:
    return f"[{ci[0]:.1f}, {ci[1]:.1f}]"


def enough_seeds(*groups: dict) -> bool:
    """Whether every summary in ``groups`` has at least ``MIN_SEEDS_FOR_VERDICT`` seeds, enough for a verdict."""
    return min(group["seeds"] for group in groups) >= MIN_SEEDS_FOR_VERDICT


def pair_verdicts(summary: dict[str, dict], baseline: str, challenger: str, names: tuple[str, str]) -> list[str]:
    """For every task: each group whose label starts with ``challenger`` against the group ``baseline``
    (final return and AUC: outcome, difference, probability of improvement); ``names`` = (challenger's,
    baseline's) display names. Fewer than ``MIN_SEEDS_FOR_VERDICT`` seeds a side: no verdict."""
    lines = []
    for key, group in summary.items():
        task, label = key.split("/", 1)
        plain = summary.get(f"{task}/{baseline}")
        if not label.startswith(challenger) or plain is None:
            continue
        title = f"**{task}, {label} vs {names[1]}**"
        if not enough_seeds(group, plain):
            lines.append(f"- {title}: fewer than {MIN_SEEDS_FOR_VERDICT} seeds a side, no verdict yet")
            continue
        lines.append(
            f"- {title} ({group['seeds']} vs {plain['seeds']} seeds): final return "
            f"{verdict(group, plain, name=names[0])}; AUC {verdict(group, plain, 'auc', names[0])} "
            f"[{compare(group, plain)} / {compare(group, plain, 'auc')}]; "
            f"{improvement_line(group, plain, (label, names[1]))}"
        )
    return lines
