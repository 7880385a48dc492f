"""A self-contained HTML page of a score: pooled figures and a table per image."""
from __future__ import annotations

import html

from .scoring import ScoreReport

_STYLE = ("body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}"
          "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#eee}"
          "td:first-child{text-align:left}")


def score_html(report: ScoreReport, title: str = "SpaceNet F1") -> str:
    def row(name, score) -> str:
        cells = [score.tp, score.fp, score.fn, f"{score.precision:.4f}", f"{score.recall:.4f}", f"{score.f1:.4f}"]
        return "<tr><td>" + html.escape(str(name)) + "</td>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"

    header = "<tr><th>image</th><th>TP</th><th>FP</th><th>FN</th><th>precision</th><th>recall</th><th>F1</th></tr>"
    rows = [row("all images (pooled)", report.pooled)] + [row(i, s) for i, s in report.per_image.items()]
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
            f"<p>Variant <b>{report.variant}</b>, IoU &gt; {report.iou_threshold:g}, minimum area "
            f"{report.min_area:g}. F1 <b>{report.f1:.4f}</b> (TP {report.tp}, FP {report.fp}, FN {report.fn}).</p>"
            f"<table>{header}{''.join(rows)}</table></body></html>")
