#!/usr/bin/env python3
"""Summarises the publish benchmark and draws its chart, with no dependency
beyond Python's standard library.

    python3 scripts/chart.py [DIR]        (default DIR: benchmarks)

Reads DIR/publish-runs.csv (and DIR/flash-runs.csv if present), both written
by scripts/bench-publish.sh, and writes:
  DIR/publish-summary.md  median msgs/s per variant and mode, ratios, Redis
                          commands per message, flash bytes per message
  DIR/publish.svg         a bar chart of the median msgs/s
"""

import csv
import statistics
import sys
from html import escape
from pathlib import Path

VARIANTS = ["redis-unix-defer", "redis-tcp-defer", "redis-unix", "redis-tcp", "naive-unix", "naive-tcp", "paho-file", "none"]
LABELS = {
    "redis-unix-defer": "RedisPersistence, Unix, deferred",
    "redis-tcp-defer": "RedisPersistence, TCP, deferred",
    "redis-unix": "RedisPersistence, Unix socket",
    "redis-tcp": "RedisPersistence, TCP",
    "naive-unix": "0.3 algorithm, Unix socket",
    "naive-tcp": "0.3 algorithm, TCP",
    "paho-file": "Paho file persistence",
    "none": "no persistence",
}
COLOURS = {
    "redis-unix-defer": "#00441b",
    "redis-tcp-defer": "#238b45",
    "redis-unix": "#1b7837",
    "redis-tcp": "#5aae61",
    "naive-unix": "#9970ab",
    "naive-tcp": "#c2a5cf",
    "paho-file": "#e08214",
    "none": "#999999",
}
MODES = [
    ("window", "64 unacknowledged at most"),
    ("sequential", "each publish waits for its PUBACK"),
]


def read_runs(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def medians(runs):
    """{(variant, mode): (median msgs/s, runs, median commands per message)}"""
    grouped = {}
    for run in runs:
        grouped.setdefault((run["variant"], run["mode"]), []).append(run)
    result = {}
    for key, group in grouped.items():
        rates = [float(r["msgs_per_s"]) for r in group]
        per_message = [int(r["redis_commands"]) / int(r["messages"]) for r in group]
        result[key] = (statistics.median(rates), len(group), statistics.median(per_message), group[0])
    return result


def ratio(table, a, b, mode):
    if (a, mode) in table and (b, mode) in table:
        return f"{table[(a, mode)][0] / table[(b, mode)][0]:.2f}x"
    return "n/a"


def summary(table, flash_runs):
    lines = []
    for mode, description in MODES:
        present = [v for v in VARIANTS if (v, mode) in table]
        if not present:
            continue
        messages = table[(present[0], mode)][3]["messages"]
        lines.append(f"### QoS 1 publish, {mode} ({description}), {messages} messages per run\n")
        lines.append("| variant | runs | median msgs/s | vs 0.3 TCP | vs Paho file | Redis commands/msg |")
        lines.append("|---|---:|---:|---:|---:|---|")
        for variant in present:
            rate, runs, per_message, first = table[(variant, mode)]
            detail = ""
            if variant.startswith(("redis", "naive")):
                counts = first["redis_command_detail"].split()
                messages_run = int(first["messages"])
                detail = f"{per_message:.3f} ({', '.join(counts)} for {messages_run} msgs)"
            lines.append(
                f"| {LABELS[variant]} | {runs} | {rate:,.0f} | {ratio(table, variant, 'naive-tcp', mode)} "
                f"| {ratio(table, variant, 'paho-file', mode)} | {detail} |"
            )
        lines.append("")
        lines.append(
            f"Unix socket vs TCP: RedisPersistence {ratio(table, 'redis-unix', 'redis-tcp', mode)}, "
            f"0.3 algorithm {ratio(table, 'naive-unix', 'naive-tcp', mode)}.\n"
        )
    if flash_runs:
        lines.append("### Bytes written per message, store on ext4 on a loop device\n")
        lines.append(
            "| store | run | file system to its block device | publisher write_bytes | "
            "publisher cancelled_write_bytes | redis-server write_bytes |"
        )
        lines.append("|---|---|---:|---:|---:|---:|")
        for run in flash_runs:
            if run["mode"] == "idle":
                idle = int(run["fs_written_bytes"])
                lines.append(f"| control: no publisher | idle 10 s | {idle:,} bytes in all | | | |")
                continue
            n = int(run["messages"])
            if run["mode"] == "window":
                how = f"{n} msgs, window, {float(run['seconds']):.1f} s"
            else:
                how = f"{n} msgs, one at a time, paced, {float(run['seconds']):.1f} s"

            def per(field):
                return f"{int(run[field]) / n:,.1f}"

            lines.append(
                f"| {run['round']} | {how} | {per('fs_written_bytes')} | {per('client_write_bytes')} | "
                f"{per('client_cancelled_write_bytes')} | {per('redis_write_bytes')} |"
            )
        lines.append("")
    return "\n".join(lines)


def svg(table):
    width, bar_height, gap, left, right = 980, 18, 6, 230, 300
    panel_gap = 48
    rows = [v for v in VARIANTS if any((v, m) in table for m, _ in MODES)]
    panel_height = len(rows) * (bar_height + gap) + 40
    height = 40 + len(MODES) * (panel_height + panel_gap) - panel_gap
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="13">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{width / 2}" y="26" text-anchor="middle" font-size="16" font-weight="bold">'
        "QoS 1 publish throughput, 256 B payload, local mosquitto and Redis (median msgs/s)</text>",
    ]
    y = 50
    for mode, description in MODES:
        present = [v for v in rows if (v, mode) in table]
        if not present:
            continue
        top = max(table[(v, mode)][0] for v in present)
        scale = (width - left - right) / top
        out.append(f'<text x="10" y="{y + 14}" font-weight="bold">{escape(mode)}: {escape(description)}</text>')
        y += 26
        for variant in present:
            rate = table[(variant, mode)][0]
            length = max(1.0, rate * scale)
            out.append(
                f'<text x="{left - 8}" y="{y + bar_height - 5}" text-anchor="end">{escape(LABELS[variant])}</text>'
            )
            out.append(
                f'<rect x="{left}" y="{y}" width="{length:.1f}" height="{bar_height}" fill="{COLOURS[variant]}"/>'
            )
            note = f"{rate:,.0f}"
            if variant != "naive-tcp" and ("naive-tcp", mode) in table:
                note += f"  ({ratio(table, variant, 'naive-tcp', mode)} the 0.3 algorithm over TCP)"
            out.append(f'<text x="{left + length + 6:.1f}" y="{y + bar_height - 5}">{note}</text>')
            y += bar_height + gap
        y += panel_gap
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main():
    directory = Path(sys.argv[1] if len(sys.argv) > 1 else "benchmarks")
    runs_path = directory / "publish-runs.csv"
    table = medians(read_runs(runs_path)) if runs_path.exists() else {}
    flash_path = directory / "flash-runs.csv"
    flash_runs = read_runs(flash_path) if flash_path.exists() else []
    text = summary(table, flash_runs)
    (directory / "publish-summary.md").write_text(text + "\n")
    print(text)
    print(f"wrote {directory / 'publish-summary.md'}")
    if table:
        (directory / "publish.svg").write_text(svg(table))
        print(f"wrote {directory / 'publish.svg'}")


if __name__ == "__main__":
    main()
