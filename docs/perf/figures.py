#!/usr/bin/env python3
"""Turns the JSON documents of docs/perf/run-figures.sh into the tables of docs/PERFORMANCE.md
and docs/perf/clients.svg (throughput and p99 latency against clients). Standard library only.

Usage: python3 docs/perf/figures.py docs/perf/results
"""
import glob
import json
import os
import statistics
import sys


def load(results, name):
    runs = []
    for path in sorted(glob.glob(os.path.join(results, f"{name}.r*.json"))):
        with open(path) as handle:
            runs.append(json.load(handle))
    return runs


def median(values):
    return statistics.median(values) if values else float("nan")


def ms(us):
    return us / 1000.0


def side(runs, key, field):
    values = []
    for run in runs:
        summary = run.get(key)
        if summary is None:
            continue
        if field in ("p50", "p99", "p999"):
            values.append(summary["latency_us"][field])
        else:
            values.append(summary[field])
    return median(values)


def tables(results):
    lines = []
    c1 = load(results, "insert-c1")
    if c1:
        fsync = median([run["floor"]["fsync_us"]["p50"] for run in c1])
        rtt = median([run["floor"]["rtt_us"]["p50"] for run in c1])
        p50 = side(c1, "paxsql", "p50")
        ratios = [run["p50_over_floor"] for run in c1]
        lines += [
            "| 1 client `insert` | paxsql p50 | fsync p50 | RTT p50 | floor | p50 / floor (per run) | goal |",
            "|---|---:|---:|---:|---:|---:|---:|",
            f"| median of {len(c1)} runs | {ms(p50):.2f} ms | {ms(fsync):.2f} ms | {ms(rtt):.3f} ms "
            f"| {ms(fsync + rtt):.2f} ms | {', '.join(f'{r:.2f}×' for r in ratios)} | ≤ 1.5× |",
            "",
        ]
    rows = []
    for name, label, goal in [
        ("insert-c1", "`insert`, 1 client", ""),
        ("insert-c64", "`insert`, 64 clients", "≥ 5×"),
        ("read-local-c1", "`point-read` local, 1 client", "≥ 0.5×"),
        ("read-local-c4", "`point-read` local, 4 clients", "≥ 0.5×"),
    ]:
        runs = load(results, name)
        if not runs:
            continue
        ratios = [run["throughput_ratio"] for run in runs]
        # The echo ceiling (round trips/s of a bare loopback echo, as many clients) is in runs
        # of paxsql bench from 2026-12-03 on.
        echoes = [run["floor"].get("echo_ops_per_second") for run in runs]
        echoes = [echo for echo in echoes if echo]
        ceiling = f"{median(echoes):.0f}" if echoes else "–"
        rows.append(
            f"| {label} | {side(runs, 'paxsql', 'ops_per_second'):.0f} | {ms(side(runs, 'paxsql', 'p99')):.3f} "
            f"| {side(runs, 'baseline', 'ops_per_second'):.0f} | {ms(side(runs, 'baseline', 'p99')):.3f} "
            f"| {median(ratios):.2f}× ({', '.join(f'{r:.2f}' for r in ratios)}) | {goal} | {ceiling} |"
        )
    if rows:
        lines += [
            "| workload | paxsql ops/s | paxsql p99 ms | SQLite ops/s | SQLite p99 ms | paxsql / SQLite (median; runs) | goal | loopback echo ceiling, round trips/s |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
            *rows,
            "",
        ]
    one, four = load(results, "insert-c64"), load(results, "insert-c64-g4")
    if one and four:
        pairs = [f["paxsql"]["ops_per_second"] / o["paxsql"]["ops_per_second"] for o, f in zip(one, four)]
        lines += [
            "| 64 clients `insert` | ops/s | p50 ms | p99 ms |",
            "|---|---:|---:|---:|",
            f"| 1 group (`main`) | {side(one, 'paxsql', 'ops_per_second'):.0f} | {ms(side(one, 'paxsql', 'p50')):.2f} | {ms(side(one, 'paxsql', 'p99')):.2f} |",
            f"| 4 groups (`main,g2,g3,g4`) | {side(four, 'paxsql', 'ops_per_second'):.0f} | {ms(side(four, 'paxsql', 'p50')):.2f} | {ms(side(four, 'paxsql', 'p99')):.2f} |",
            f"| 4 groups / 1 group, per round | {', '.join(f'{p:.2f}×' for p in pairs)} | | goal ≥ 2× |",
            "",
        ]
    failovers = load(results, "failover")
    if failovers:
        times = [run["failover_ms"] for run in failovers]
        lease = failovers[0]["lease_ms"]
        lines += [
            "| failover (kill -9 of the master → first acknowledged write) | runs (ms) | median | goal |",
            "|---|---:|---:|---:|",
            f"| lease {lease} ms | {', '.join(str(t) for t in times)} | {median(times):.0f} ms | ≤ {lease + 1000} ms |",
            "",
        ]
    return "\n".join(lines)


def sweep(results):
    points = []
    for clients in (1, 4, 16, 64):
        runs = load(results, f"insert-c{clients}")
        if runs:
            points.append((clients, side(runs, "paxsql", "ops_per_second"), ms(side(runs, "paxsql", "p99"))))
    return points


def svg(points):
    """Two panels side by side: ops/s and p99 ms against clients (log2 x axis)."""
    width, height, margin = 360, 260, 50
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{2 * width}" height="{height}" '
             'font-family="sans-serif" font-size="12">',
             f'<rect width="{2 * width}" height="{height}" fill="white"/>']
    xs = [1, 4, 16, 64]

    def x_of(clients, left):
        import math
        return left + margin + (math.log2(clients) / 6.0) * (width - 2 * margin)

    for panel, (title, index, color) in enumerate([("insert throughput (ops/s)", 1, "#1f77b4"),
                                                    ("insert p99 latency (ms)", 2, "#d62728")]):
        left = panel * width
        top_value = max(point[index] for point in points) * 1.15 or 1.0

        def y_of(value):
            return height - margin - (value / top_value) * (height - 2 * margin)

        parts.append(f'<text x="{left + width / 2}" y="20" text-anchor="middle">{title}</text>')
        parts.append(f'<line x1="{left + margin}" y1="{height - margin}" x2="{left + width - margin}" '
                     f'y2="{height - margin}" stroke="black"/>')
        parts.append(f'<line x1="{left + margin}" y1="{margin}" x2="{left + margin}" '
                     f'y2="{height - margin}" stroke="black"/>')
        for clients in xs:
            x = x_of(clients, left)
            parts.append(f'<text x="{x}" y="{height - margin + 16}" text-anchor="middle">{clients}</text>')
        parts.append(f'<text x="{left + width / 2}" y="{height - 12}" text-anchor="middle">clients</text>')
        for step in range(5):
            value = top_value * step / 4
            y = y_of(value)
            parts.append(f'<text x="{left + margin - 6}" y="{y + 4}" text-anchor="end">{value:.0f}</text>')
            parts.append(f'<line x1="{left + margin}" y1="{y}" x2="{left + width - margin}" y2="{y}" '
                         'stroke="#ddd"/>')
        coordinates = " ".join(f"{x_of(point[0], left):.1f},{y_of(point[index]):.1f}" for point in points)
        parts.append(f'<polyline points="{coordinates}" fill="none" stroke="{color}" stroke-width="2"/>')
        for point in points:
            x, y = x_of(point[0], left), y_of(point[index])
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{color}"/>')
            parts.append(f'<text x="{x:.1f}" y="{y - 8:.1f}" text-anchor="middle">{point[index]:.0f}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def main():
    results = sys.argv[1] if len(sys.argv) > 1 else "docs/perf/results"
    print(tables(results))
    points = sweep(results)
    if points:
        path = os.path.join(os.path.dirname(os.path.abspath(results)), "clients.svg")
        with open(path, "w") as handle:
            handle.write(svg(points))
        print(f"wrote {path}")
        for clients, ops, p99 in points:
            print(f"| {clients} | {ops:.0f} | {p99:.2f} |")


if __name__ == "__main__":
    main()
