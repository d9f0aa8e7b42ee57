"""bench_bridge.py's report: the Markdown tables (bridge.md) and the plots
(bridge.png) of one run's results (the dict bridge.json holds)."""

from __future__ import annotations

from harness import fmt_bytes, fmt_elems, fmt_ratio, fmt_time


def best_short(row: dict) -> str:
    return next(c["short"] for c in row["candidates"] if c["label"] == row["best_peer"])


def runs(c: dict) -> str:
    return f"{c['samples']} × {c['calls_per_sample']}"


def candidate_lines(row: dict, scale: float, fmt: str, *, zero_copy: bool) -> list[str]:
    """Table lines for one row's candidates (sections 1 and 4): times in
    seconds x `scale`, formatted with `fmt`; ours in bold."""
    lines = []
    for i, c in enumerate(row["candidates"]):
        ours = c["role"] == "ours"
        lab = (f"**`{c['label']}`**" if ours else f"`{c['label']}`") + (
            f" {c['note']}" if c["note"] else "")
        rat = fmt_ratio(c["vs_best_peer"])
        cells = [row["what"] if i == 0 else "", lab, format(c["median_s"] * scale, fmt),
                 f"{c['p25_s'] * scale:{fmt}}–{c['p75_s'] * scale:{fmt}}",
                 f"**{rat}**" if ours else rat]
        if zero_copy:
            cells.append("yes" if c["zero_copy"] else "no")
        lines.append("| " + " | ".join(cells + [runs(c)]) + " |")
    return lines


def candidate_table(heading: str, first: str, unit: str, rows: list[dict], scale: float,
                    fmt: str, *, zero_copy: bool) -> list[str]:
    """Sections 1 and 4: a heading, then one table line per candidate."""
    out = ["", heading, "",
           f"| {first} | call | median {unit}/call | p25–p75 {unit} | / best peer |"
           + (" zero-copy |" if zero_copy else "") + " runs |",
           "|---|---|---:|---:|---:|" + (":---:|" if zero_copy else "") + "---:|"]
    for row in rows:
        out += candidate_lines(row, scale, fmt, zero_copy=zero_copy)
    return out


def to_markdown(res: dict) -> str:
    m = res["machine"]
    out = ["# torchbridge vs the built-ins: CPU conversion speed", "",
           "| | |", "|---|---|",
           f"| command | `{m['command']}` (in `{m['cwd']}`) |",
           f"| date | {m['date']}, {res['wall_s']:.0f} s |",
           f"| CPU | {m['cpu']}: {m['logical_cores']} logical cores ({m['usable_cores']} usable), "
           f"RAM {m['ram_gib']} GiB |",
           f"| threads | torch.get_num_threads() = {m['torch_threads']} "
           f"({m['parallel_backend']}), interop {m['torch_interop_threads']}"
           + (f"; env {m['env']}" if m["env"] else "") + " |",
           f"| memory | transparent huge pages `{m['transparent_hugepages']}`; NumPy madvises "
           f"huge pages: {m['numpy_madvise_hugepage']} |",
           "| load average (1/5/15 min) | start "
           + " / ".join(f"{x:.2f}" for x in m["load_average_start"]) + ", end "
           + " / ".join(f"{x:.2f}" for x in m["load_average_end"]) + " |",
           f"| other processes | used {m['other_processes_cores']:.2f} cores' worth of CPU "
           "during the run (/proc/stat minus this process; per section: "
           + ", ".join(f"{k} {v['other_processes_cores']:.2f}" for k, v in res["sections"].items())
           + ") |",
           f"| versions | Python {m['python']}, torch {m['torch']}, NumPy {m['numpy']}, "
           f"torchbridge {m['torchbridge']} |",
           f"| torchbridge measured | `{m['torchbridge_path']}`, git {m['git_commit']}"
           + (" (uncommitted source changes)" if m["git_dirty_sources"] else "")
           + f", extension built {m['extension_built']} |",
           "",
           "Figures are medians over samples of per-call time; each sample is a tight loop "
           "of many calls (runs = samples × calls per sample, after a warm-up), with the "
           "candidates' order balanced between samples (each runs first, and right after each "
           "other, equally often) and the GC off. "
           "**ours / best peer** < 1 means torchbridge is faster than the fastest built-in; "
           "the column `/ best peer` gives each row's median over the best peer's. "
           f"An empty timeit loop costs {res['loop_overhead_ns']:.0f} ns per iteration "
           "(included in every per-call figure, not subtracted)."]
    for w in m["warnings"]:
        out += ["", f"> **warning:** {w}"]
    busy = max([m["other_processes_cores"]]
               + [v["other_processes_cores"] for v in res["sections"].values()])
    if busy > 0.2:
        out += ["", f"> **warning:** other processes kept up to {busy:.2f} cores busy during "
                f"this run (of {m['usable_cores']}): expect noise, above all in ATen's "
                "multi-threaded copies (section 3), whose parallel regions wait for a "
                "descheduled worker thread; compare kernels with --threads 1 or on a quiet "
                "machine."]
    s = res["sections"]
    if "per_call" in s:
        out += candidate_table(f"## 1. {s['per_call']['title']}", "conversion", "ns",
                               s["per_call"]["rows"], 1e9, ".0f", zero_copy=True)
    if "size" in s:
        out += ["", f"## 2. {s['size']['title']} (ns per call)", "",
                "| float32 size | elements | `tb.to_tensor(a)` | `torch.from_numpy(a)` | "
                "**ours / best peer** | `tb.to_numpy(t)` | `t.numpy(force=True)` | "
                "**ours / best peer** | runs |",
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for row in s["size"]["rows"]:
            tt, tn = row["to_tensor"], row["to_numpy"]
            out.append(f"| {fmt_bytes(row['bytes'])} | {row['elements']:,} | "
                       f"{tt['ours_s'] * 1e9:.0f} | {tt['best_peer_s'] * 1e9:.0f} | "
                       f"**{fmt_ratio(tt['ratio_to_best_peer'])}** | {tn['ours_s'] * 1e9:.0f} | "
                       f"{tn['best_peer_s'] * 1e9:.0f} | **{fmt_ratio(tn['ratio_to_best_peer'])}** | "
                       f"{runs(tt['candidates'][0])} |")
    if "coercion" in s:
        rows = s["coercion"]["rows"]
        labels = [c["label"] for c in rows[0]["candidates"]]
        out += ["", f"## 3. {s['coercion']['title']}", "",
                "Time per call (GB/s of float32 output). Each call makes a fresh output, kept "
                "only until the next call; the time includes allocating, faulting in and "
                "freeing it. memcpy = "
                "a plain copy of the same output bytes (float32 to float32, no conversion) "
                "into fresh memory: NumPy's `s32.copy()` (one thread; NumPy madvises huge "
                "pages for >= 4 MB) and torch's `s32t.clone()` (ATen's threaded copy; 4 KB "
                "pages); ours / memcpy divides by the faster of the two.", "",
                "| elements | output | " + " | ".join(
                    f"**`{lbl}`**" if i == 0 else f"`{lbl}`" for i, lbl in enumerate(labels))
                + " | **ours / best peer** | ours / memcpy | runs |",
                "|---|---|" + "---:|" * (len(labels) + 3)]
        for row in rows:
            cells = [f"{fmt_time(c['median_s'])} ({c['output_GBps']:.2f})"
                     for c in row["candidates"]]
            out.append(f"| {fmt_elems(row['elements'])} | {fmt_bytes(row['output_bytes'])} | "
                       + " | ".join(cells)
                       + f" | **{fmt_ratio(row['ratio_to_best_peer'])}** "
                       f"({best_short(row)}) | "
                       f"{fmt_ratio(row['ratio_to_best_ref'])} | "
                       f"{runs(row['candidates'][0])} |")
        out += ["", "Per call: minor page faults · process CPU time per wall second "
                "(main thread's alone). Process CPU > 1 means more than one thread was busy; "
                "it also counts OpenMP workers still spin-waiting after an earlier parallel "
                "region. Main thread well under 1 means it sat waiting (for a worker thread "
                "the scheduler had not run, or for the kernel).", "",
                "| elements | " + " | ".join(f"`{lbl}`" for lbl in labels) + " |",
                "|---|" + "---:|" * len(labels)]
        for row in rows:
            out.append(f"| {fmt_elems(row['elements'])} | " + " | ".join(
                f"{c['page_faults_per_call']:.0f} · {c['cpu_per_wall']:.2f} "
                f"({c['main_thread_cpu_per_wall']:.2f})"
                for c in row["candidates"]) + " |")
    if "tree" in s:
        out += candidate_table(f"## 4. {s['tree']['title']}", "tree", "µs", s["tree"]["rows"],
                               1e6, ".1f", zero_copy=False)
    problems = [p for sec in s.values() for p in sec["problems"]]
    if problems:
        out += ["", "## Problems found while checking the contenders", ""]
        out += [f"- {p}" for p in problems]
    return "\n".join(out) + "\n"


def finish_loglog(ax, xlabel: str, ylabel: str, title: str, *, legend_size: int) -> None:
    """Labels, title, legend and grid of a log-log panel."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=legend_size)
    ax.grid(True, which="both", alpha=0.3)


def plot(res: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = res["sections"]
    fig, axes = plt.subplots(2, 2, figsize=(15, 11))
    ours_color, peer_colors = "#d62728", ["#1f77b4", "#7f7f7f", "#2ca02c", "#9467bd",
                                          "#8c564b", "#17becf"]

    def bars(ax, rows, scale, unit, title):
        """Horizontal bars, one per candidate, grouped by comparison."""
        y, yticks, ylabels = 0.0, [], []
        vmax = max(c["median_s"] * scale for row in rows for c in row["candidates"])
        for row in rows:
            ax.text(0, y - 0.15, f"{row['what']}: ours / best peer = "
                    f"{row['ratio_to_best_peer']:.2f}", fontsize=8, fontweight="bold",
                    va="bottom")
            y += 0.9
            peer_i = 0
            for c in row["candidates"]:
                if c["role"] == "ours":
                    color = ours_color
                else:
                    color = peer_colors[peer_i % len(peer_colors)]
                    peer_i += 1
                v = c["median_s"] * scale
                ax.barh(y, v, color=color, height=0.8,
                        hatch="//" if c["role"] == "ref" else None,
                        edgecolor="black" if c["role"] == "ours" else "white")
                ax.text(v + 0.01 * vmax, y, f"{v:.0f}" if v >= 10 else f"{v:.1f}",
                        va="center", fontsize=7)
                yticks.append(y)
                ylabels.append(c["label"] if len(c["label"]) <= 48
                               else c["label"][:46] + "…")
                y += 1
            y += 0.6
        ax.set_yticks(yticks, ylabels, fontsize=7)
        ax.set_ylim(y - 0.4, -1.0)  # top to bottom
        ax.set_xlim(0, vmax * 1.12)
        ax.set_xlabel(unit)
        ax.set_title(title, fontsize=10)
        for lbl, c in zip(ax.get_yticklabels(),
                          [c for row in rows for c in row["candidates"]]):
            if c["role"] == "ours":
                lbl.set_color(ours_color)
                lbl.set_fontweight("bold")

    if "per_call" in s:
        bars(axes[0, 0], s["per_call"]["rows"], 1e9, "ns per call (median)",
             "1. zero-copy paths, per call (red: torchbridge; hatched: copy, reference)")
    else:
        axes[0, 0].set_axis_off()

    ax = axes[0, 1]
    if "size" in s:
        rows = s["size"]["rows"]
        xs = [r["bytes"] for r in rows]
        for key, style in (("to_tensor", "-"), ("to_numpy", "--")):
            for i, lbl in enumerate(c["label"] for c in rows[0][key]["candidates"]):
                ys = [next(c for c in r[key]["candidates"] if c["label"] == lbl)["median_s"] * 1e9
                      for r in rows]
                ax.loglog(xs, ys, style, marker="o",
                          color=ours_color if i == 0 else peer_colors[0 if key == "to_tensor" else 1],
                          label=lbl, lw=2.5 if i == 0 else 1.5)
        finish_loglog(ax, "float32 bytes", "ns per call (median)",
                      "2. zero-copy cost against size (flat = does not grow)", legend_size=8)
    else:
        ax.set_axis_off()

    ax = axes[1, 0]
    if "coercion" in s:
        rows = s["coercion"]["rows"]
        xs = [r["elements"] for r in rows]
        peer_i = 0
        for j, c0 in enumerate(rows[0]["candidates"]):
            ys = [r["candidates"][j]["median_s"] for r in rows]
            if c0["role"] == "ours":
                kw = dict(color=ours_color, lw=2.5, marker="o")
            elif c0["role"] == "ref":
                kw = dict(color="black", ls=":" if "numpy" in c0["label"] else "-.", lw=1.2,
                          marker=".")
            else:
                kw = dict(color=peer_colors[peer_i], lw=1.5, marker="s", ms=4)
                peer_i += 1
            ax.loglog(xs, ys, label=c0["label"], **kw)
        finish_loglog(ax, "elements (float64 in, float32 out)", "seconds per call (median)",
                      "3. float64 -> float32 into a fresh tensor", legend_size=7)
    else:
        ax.set_axis_off()

    if "tree" in s:
        bars(axes[1, 1], s["tree"]["rows"], 1e6, "µs per call (median)",
             "4. trees: dict of 64 arrays of 256 elements (red: torchbridge)")
    else:
        axes[1, 1].set_axis_off()

    m = res["machine"]
    fig.suptitle(f"torchbridge {m['torchbridge']} (git {m['git_commit']}) on {m['cpu']}, "
                 f"{m['usable_cores']} cores, torch {m['torch']} ({m['torch_threads']} threads), "
                 f"NumPy {m['numpy']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
