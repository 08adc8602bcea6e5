"""The monitor's report.html: one self-contained page (plots inlined as PNG data URIs, no scripts, no
network) an operator can open from a laptop or attach to an incident. matplotlib draws; the page
is a template filled with html-escaped figures from drift.json."""
from __future__ import annotations

import base64
import html
import io
from typing import Any, Mapping

import numpy as np

# Features plotted when none drifted: the most shifted few, so a quiet report still shows the inputs.
QUIET_PLOTS = 4
_CSS = ("body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#eee}"
        ".alarm{color:#b00;font-weight:bold}.quiet{color:#070;font-weight:bold}img{max-width:100%}")


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return f'<img src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def _histogram(title: str, reference: np.ndarray, current: np.ndarray) -> str:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 2.8))
    reference, current = reference[np.isfinite(reference)], current[np.isfinite(current)]
    both = np.concatenate([reference, current])
    if both.size:
        bins = np.histogram_bin_edges(both, bins=30)
        ax.hist(reference, bins=bins, density=True, alpha=0.5, label=f"reference ({reference.size})")
        ax.hist(current, bins=bins, density=True, alpha=0.5, label=f"current ({current.size})")
        ax.legend(fontsize=7)
    ax.set_title(title, fontsize=9)
    return _png(fig)


def _timeline_plot(timeline: list[Mapping[str, Any]]) -> str:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 2.8))
    if timeline:
        times = np.array([row["bucket_start_ms"] for row in timeline], dtype="datetime64[ms]")
        inputs = np.array([row["inputs"] for row in timeline], dtype=float)
        quarantined = np.array([row["quarantined"] for row in timeline], dtype=float)
        width = (times[1] - times[0]) * 0.8 if len(times) > 1 else np.timedelta64(2_880_000, "ms")
        ax.bar(times, inputs, width=width, label="inputs", color="#8ab")
        ax.bar(times, [row["scored"] for row in timeline], width=width * 0.5, label="scored", color="#357")
        share = ax.twinx()
        share.plot(times, np.divide(quarantined, inputs, out=np.zeros_like(inputs), where=inputs > 0),
                   color="#b00", marker="o", label="quarantine share")
        share.set_ylim(0, 1)
        share.set_ylabel("quarantine share", fontsize=8)
        ax.legend(loc="upper left", fontsize=7)
    ax.set_title("volume and quarantine share over time (UTC)", fontsize=9)
    return _png(fig)


def _sample(distribution: Mapping[str, Any]) -> np.ndarray:
    return np.asarray(distribution["sample"], dtype=float)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape("" if value is None else str(value))


def _feature_table(columns: Mapping[str, Mapping[str, Any]]) -> str:
    keys = ["rows", "reference_mean", "mean", "psi", "psi_band", "ks_pvalue", "wasserstein_std", "missing_share",
            "drifted"]
    rows = "".join(f"<tr><th>{html.escape(name)}</th>" + "".join(f"<td>{_cell(f[k])}</td>" for k in keys) + "</tr>"
                   for name, f in sorted(columns.items(), key=lambda kv: -(kv[1]["psi"] or 0)))
    return f"<table><tr><th>column</th>{''.join(f'<th>{k}</th>' for k in keys)}</tr>{rows}</table>"


def render_report(body: Mapping[str, Any], profile, window) -> str:
    """The HTML page of one monitor run: verdict and alarms, plots, every column's figures."""
    columns = body["features"]
    drifted = [a["name"] for a in body["alarms"] if a["kind"] == "feature"]
    plotted = drifted or sorted(columns, key=lambda n: -(columns[n]["psi"] or 0))[:QUIET_PLOTS]
    plots = [_histogram(f"{name} (PSI {columns[name]['psi'] or 0:.3f})", _sample(profile.feature(name)),
                        window.features[name]) for name in plotted]
    verdict = body["verdict"]
    alarms = "".join(f"<li>{html.escape(a['message'])}</li>" for a in body["alarms"]) or "<li>none</li>"
    q = body["quarantine"]
    reasons = "".join(f"<tr><th>{html.escape(k)}</th><td>{v}</td></tr>" for k, v in q["by_reason"].items())
    return f"""<!doctype html><html><head><meta charset="utf-8">
<title>photoscore monitor: {html.escape(body['model_uri'])} {verdict}</title><style>{_CSS}</style></head><body>
<h1>{html.escape(body['model_name'])} version {body['model_version']}:
<span class="{'alarm' if verdict == 'alarm' else 'quiet'}">{verdict.upper()}</span></h1>
<p>{html.escape(body['model_uri'])} over <code>{html.escape(str(body['tables']))}</code>, feature version
{body['feature_version']}: {body['feature_rows']} featured contents, {body['score_rows']} scores,
{q['inputs']} inputs, window from {_cell(body['since_ms'])} to {_cell(body['until_ms'])} (epoch ms).</p>
<h2>Alarms</h2><ul>{alarms}</ul>
<h2>{'Drifted features' if drifted else 'Most shifted features'}: reference vs current</h2>{''.join(plots)}
<h2>Score distribution</h2>{_histogram('score', _sample(profile.score), window.scores)}
<h2>Volume and quarantine</h2>{_timeline_plot(body['timeline'])}
<p>quarantine share {q['share']:.2%} of {q['inputs']} inputs (reference {q['reference_share']:.2%});
score failures of this version: {body['score_failed']}</p>
<table><tr><th>reason</th><th>inputs</th></tr>{reasons}</table>
<h2>Every column</h2>{_feature_table({**columns, 'score': body['score']})}
<p>Thresholds: {html.escape(', '.join(f'{k}={v}' for k, v in body['thresholds'].items()))}</p>
</body></html>
"""
