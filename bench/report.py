#!/usr/bin/env python3
"""Turns bench/results.json into bench/results.md and bench/results.svg (standard library only).

    python3 bench/report.py [bench/results.json]
"""

import json
import statistics
import sys
from html import escape
from pathlib import Path

HERE = Path(__file__).resolve().parent
MiB = 1 << 20

TARGETS = {
    "logical1_vs_media": 0.2,
    "restore_vs_floor": 1.2,
    "s3_vs_rclone": 1.0,
    "fs_vs_cp": 0.8,
    "rss_4g_mib": 128,
    "planner_100k_s": 1.0,
}


def fmt_qty(n):
    for unit, size in (("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return str(n)


def stats(values):
    v = [x for x in values if x is not None]
    if not v:
        return None
    return {"median": statistics.median(v), "min": min(v), "max": max(v), "n": len(v)}


def fmt(s, digits=2, unit=""):
    if s is None:
        return "–"
    d = digits
    return f"{s['median']:.{d}f}{unit} ({s['min']:.{d}f}–{s['max']:.{d}f})"


def verdict(ok):
    return "**met**" if ok else "**missed**"


class Report:
    def __init__(self, r):
        self.r = r
        self.c = r["config"]
        self.lines = []
        self.summary = []  # (target, goal, measured, ok)
        self.chart = {}

    def w(self, s=""):
        self.lines.append(s)

    # -- sections ---------------------------------------------------------------------------

    def header(self):
        r, c, m = self.r, self.c, self.r["machine"]
        self.w("# Mimeo benchmark results")
        self.w()
        self.w(f"Produced by `{c['command'].strip()}` on {m['date']} (commit `{m['commit']}`"
               + (", with uncommitted changes under src/" if m.get("dirty") else "")
               + f"), {r.get('elapsed_s', 0) / 60:.1f} min. Regenerate this page from the raw figures "
               "with `python3 bench/report.py` (reads `bench/results.json`).")
        self.w()
        self.w(f"Setup: {c['items']} work items × {fmt_qty(c['scale'])} of pseudo-random data, backed up "
               f"with {c['streams']} interleaved streams onto {fmt_qty(c['volume'])} volumes with "
               f"{fmt_qty(c['block'])} blocks, on three media: a directory on the local disk, a "
               "directory on tmpfs, and a bucket on `s3s-fs` (a real S3 server on loopback; its "
               "data directory on tmpfs). Every figure is the median of "
               f"{c['runs']} runs with (min–max); every ratio is taken within one round (both sides "
               "measured back to back, order rotating between rounds) and then the median of the "
               "rounds is reported, because the machine is shared and noisy.")
        self.w()
        self.w("**Machine**")
        self.w()
        self.w(f"- CPU: {m['cpu']}, `nproc` = {m['nproc']}; kernel {m['kernel']}")
        self.w(f"- load average at start / end: `{m.get('loadavg_start', '')}` / `{m.get('loadavg_end', '')}` "
               "(other builds ran on the same 2 cores)")
        self.w(f"- disk (work directory): `{m['disk']}`; tmpfs: `{m.get('fast', '')}`")
        self.w(f"- tools: {m['mimeo']}, {m.get('s3s_fs', '')}, {m['rclone']}")
        self.w("- `free -h`:")
        self.w()
        self.w("```")
        self.w(m["free_h"])
        self.w("```")
        self.w()
        self.w("Caches are warm: the sources were just written and the machine has far more RAM "
               "than data, and dropping the page cache is not permitted here. So reads come from "
               "memory; writes to the disk are throttled by writeback to the virtual disk "
               "(about 100 MB/s here, see the `cp` rows), while tmpfs shows the software's own "
               "cost.")
        self.w()

    def setup(self):
        s = self.r.get("setup")
        if not s:
            return
        self.w("## Backups (setup, one run each)")
        self.w()
        self.w("| media | volumes | bytes on volumes | backup time | extents per item |")
        self.w("|---|---:|---:|---:|---:|")
        for name, info in s.items():
            ext = list(info["item_extents"].values())
            self.w(f"| {info['backend']} | {info['volumes']} | {info['trail_bytes'] / MiB:.0f} MiB | "
                   f"{info['seconds']:.1f} s | {min(ext)}–{max(ext)} |")
        self.w()

    def dup(self):
        d = self.r["runs"].get("dup")
        if not d:
            return
        self.w("## Duplication: media (all volumes) vs logical (1, 4, 8 of 8 items), and the peer")
        self.w()
        self.w("Bytes read are the physical bytes of the blocks read (control data included); bytes "
               "written are the bytes on the new volumes. The peer copies the source trail's "
               "objects: `cp -r` then `sync` of every copied file on a filesystem (Mimeo makes each "
               "object durable with fsync before it counts, so the peer must too; `cp` alone is "
               "shown in brackets), `rclone copy` between two remotes on the same s3s-fs (client "
               "side: rclone never copies server-side across remotes unless told to).")
        self.w()
        self.chart["dup"] = {}
        for name, rounds in d.items():
            label = self.r["setup"][name]["backend"]
            self.w(f"### {label}")
            self.w()
            self.w("| copy | read | written | seconds | MB/s | time / media | throughput / peer | CPU s: client"
                   + (" + S3 server" if name == "s3" else "") + " | peak RSS |")
            self.w("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
            ops = ["media", "logical1", "logical4", "logical8", "peer"]
            names = {"media": "media, all volumes", "logical1": "logical, 1 item",
                     "logical4": "logical, 4 items", "logical8": "logical, 8 items",
                     "peer": "peer: " + ("rclone copy" if name == "s3" else "cp + sync")}
            ch = {}
            for op in ops:
                secs = stats([row[op]["seconds"] for row in rounds])
                if op == "peer":
                    read = written = rounds[0][op]["bytes"]
                else:
                    read, written = rounds[0][op]["read"], rounds[0][op]["written"]
                mbps = stats([written / row[op]["seconds"] / 1e6 for row in rounds])
                vs_media = stats([row[op]["seconds"] / row["media"]["seconds"] for row in rounds]) \
                    if op.startswith("logical") else None
                vs_peer = None
                if op in ("media", "logical8"):
                    vs_peer = stats([(row[op]["written"] / row[op]["seconds"])
                                     / (row["peer"]["bytes"] / row["peer"]["seconds"]) for row in rounds])
                extra = ""
                if op == "peer" and "cp_only" in rounds[0]["peer"]:
                    extra = f" [cp {fmt(stats([row['peer']['cp_only'] for row in rounds]))}]"
                cpu = stats([row[op].get("cpu") for row in rounds])
                server = stats([row[op].get("server_cpu") for row in rounds])
                cpu_s = "–" if cpu is None else f"{cpu['median']:.1f}" + (
                    f" + {server['median']:.1f}" if server else "")
                rss = stats([row[op].get("rss_kib") for row in rounds])
                rss_s = "–" if rss is None else f"{rss['median'] / 1024:.0f} MiB"
                self.w(f"| {names[op]} | {read / MiB:.0f} MiB | {written / MiB:.0f} MiB | {fmt(secs)}{extra} | "
                       f"{fmt(mbps, 0)} | {fmt(vs_media)} | {fmt(vs_peer)} | {cpu_s} | {rss_s} |")
                ch[op] = {"secs": secs, "vs_media": vs_media, "vs_peer": vs_peer, "mbps": mbps}
            self.chart["dup"][name] = ch
            self.w()
            l1 = ch["logical1"]["vs_media"]
            self.summary.append((f"logical 1 of 8 / media, {label}", f"≤ {TARGETS['logical1_vs_media']}",
                                 fmt(l1), l1["median"] <= TARGETS["logical1_vs_media"]))
            goal = TARGETS["s3_vs_rclone"] if name == "s3" else TARGETS["fs_vs_cp"]
            peer = "rclone copy" if name == "s3" else "cp + sync"
            v = ch["logical8"]["vs_peer"]
            self.summary.append((f"logical duplication (8 of 8) throughput / {peer}, {label}", f"≥ {goal}",
                                 fmt(v) + f" (media mode: {ch['media']['vs_peer']['median']:.2f})",
                                 v["median"] >= goal))

    def restore(self):
        d = self.r["runs"].get("restore")
        if not d:
            return
        size = self.r.get("restore_item_bytes", 0)
        self.w(f"## Restore of one item ({size / MiB:.0f} MiB) from the interleaved original vs the Sequential duplicate")
        self.w()
        self.w("The restore writes the item's files into a directory on tmpfs. Floor: reading the "
               "same bytes as plain files (`cat` of the item's files to /dev/null) or as one object "
               "(`rclone cat` of a single object of that size on the same server); 'floor + write' "
               "also writes them (`cp -r` / `rclone copyto` into tmpfs). Mimeo's time is the "
               "restore task's (status.durationSeconds); the floors are whole commands, rclone's "
               "including its start-up.")
        self.w()
        self.w("| media | from original | from duplicate | floor (read) | floor + write | duplicate / floor | original / duplicate |")
        self.w("|---|---:|---:|---:|---:|---:|---:|")
        self.chart["restore"] = {}
        for name, rounds in d.items():
            label = self.r["setup"][name]["backend"]
            s = {op: stats([row[op]["seconds"] for row in rounds]) for op in ("original", "duplicate", "floor", "floor_rw")}
            vs_floor = stats([row["duplicate"]["seconds"] / row["floor"]["seconds"] for row in rounds])
            gain = stats([row["original"]["seconds"] / row["duplicate"]["seconds"] for row in rounds])
            self.w(f"| {label} | {fmt(s['original'])} | {fmt(s['duplicate'])} | {fmt(s['floor'])} | "
                   f"{fmt(s['floor_rw'])} | {fmt(vs_floor)} | {fmt(gain)} |")
            self.chart["restore"][name] = s
            self.summary.append((f"restore from duplicate / floor, {label}", f"≤ {TARGETS['restore_vs_floor']}",
                                 fmt(vs_floor) + f"; {gain['median']:.1f}× faster than from the original",
                                 vs_floor["median"] <= TARGETS["restore_vs_floor"]))
        self.w()

    def memory(self):
        d = self.r["runs"].get("memory")
        if not d:
            return
        self.w("## Peak memory (RSS) for one work item of growing size")
        self.w()
        self.w("Peak RSS of the whole `mimeo local apply` process (`/usr/bin/time -v`), for a "
               "logical duplication of the item (Sequential) and a restore of it from that "
               "duplicate. The source trail is on disk; the duplicate and the restored files on tmpfs.")
        self.w()
        self.w("| item size | duplication RSS | duplication time | restore RSS | restore time |")
        self.w("|---|---:|---:|---:|---:|")
        pts = []
        for size, v in d.items():
            if "skipped" in v:
                self.w(f"| {size} | skipped: {v['skipped']} | | | |")
                continue
            dr = stats([x["dup"]["rss_kib"] / 1024 for x in v["runs"]])
            rr = stats([x["restore"]["rss_kib"] / 1024 for x in v["runs"]])
            dt = stats([x["dup"]["seconds"] for x in v["runs"]])
            rt = stats([x["restore"]["seconds"] for x in v["runs"]])
            self.w(f"| {size} | {fmt(dr, 0, ' MiB')} | {fmt(dt, 1, ' s')} | {fmt(rr, 0, ' MiB')} | {fmt(rt, 1, ' s')} |")
            pts.append((size, dr, rr))
        self.w()
        self.chart["memory"] = pts
        if pts:
            peak = max(max(p[1]["max"], p[2]["max"]) for p in pts)
            med = [max(p[1]["median"], p[2]["median"]) for p in pts]
            largest = pts[-1][0]
            self.summary.append((f"peak RSS, largest item measured ({largest})",
                                 f"≤ {TARGETS['rss_4g_mib']} MiB at 4Gi",
                                 f"{max(pts[-1][1]['median'], pts[-1][2]['median']):.0f} MiB (max of any run {peak:.0f} MiB)",
                                 peak <= TARGETS["rss_4g_mib"] and largest == "4Gi"))
            self.summary.append(("peak RSS flat across sizes", "flat",
                                 f"{min(med):.0f}–{max(med):.0f} MiB over {pts[0][0]}..{largest}",
                                 max(med) <= 1.25 * min(med)))

    def sweep(self):
        d = self.r["runs"].get("sweep")
        if not d:
            return
        self.w("## Block size sweep: logical duplication of 1 of 8 items")
        self.w()
        self.w("A backup trail per block size (source and duplicate use the same block size); "
               "logical duplication of one item vs media duplication of every volume.")
        self.w()
        self.chart["sweep"] = {}
        for label, blocks in d.items():
            media = "tmpfs" if label == "fs" else "S3 (s3s-fs)"
            self.w(f"### {media}")
            self.w()
            self.w("| block size | extents of the item | logical, 1 item | media, all volumes | logical / media |")
            self.w("|---|---:|---:|---:|---:|")
            pts = []
            for b, v in blocks.items():
                l1 = stats([x["logical1"]["seconds"] for x in v["runs"]])
                md = stats([x["media"]["seconds"] for x in v["runs"]])
                ratio = stats([x["logical1"]["seconds"] / x["media"]["seconds"] for x in v["runs"]])
                ext = v["backup"]["item_extents"].get("item-1")
                self.w(f"| {b} | {ext} | {fmt(l1)} s | {fmt(md)} s | {fmt(ratio)} |")
                pts.append((b, l1, md, ratio))
            self.chart["sweep"][label] = pts
            self.w()

    def ab(self):
        """Before/after figures of the proposed patches (bench/results-ab.json, if present)."""
        path = HERE / "results-ab.json"
        if not path.exists():
            return
        ab = json.loads(path.read_text())
        self.w("## Proposed patches: before / after")
        self.w()
        self.w(ab.get("note", ""))
        self.w()
        runs = ab["runs"].get("ab", {})
        if runs:
            self.w("| media | operation | before (s) | after (s) | after / before | peak RSS before → after (MiB) |")
            self.w("|---|---|---:|---:|---:|---:|")
        for name, rows in runs.items():
            label = ab["setup"][name]["backend"]
            for op in ("media", "logical1", "logical8", "restore_original", "restore_duplicate"):
                a = stats([r[op + "@a"]["seconds"] for r in rows])
                b = stats([r[op + "@b"]["seconds"] for r in rows])
                ratio = stats([r[op + "@b"]["seconds"] / r[op + "@a"]["seconds"] for r in rows])
                ra = stats([r[op + "@a"]["rss_kib"] / 1024 for r in rows])
                rb = stats([r[op + "@b"]["rss_kib"] / 1024 for r in rows])
                self.w(f"| {label} | {op.replace('_', ' ')} | {fmt(a)} | {fmt(b)} | {fmt(ratio)} | "
                       f"{ra['median']:.0f} → {rb['median']:.0f} |")
            ratios = {op: stats([r[op + "@b"]["seconds"] / r["media@b"]["seconds"] for r in rows])
                      for op in ("logical1",)}
            self.ab_l1 = getattr(self, "ab_l1", {})
            self.ab_l1[name] = ratios["logical1"]
        if runs:
            self.w()
            self.w("After the patches, logical 1 of 8 / media (same round): " + ", ".join(
                f"{ab['setup'][n]['backend']} {fmt(v)}" for n, v in self.ab_l1.items()) + ".")
            self.w()
        for title, key in (("Peak RSS by item size", "memory"),):
            mem = ab.get(key)
            if not mem:
                continue
            self.w(f"{title}, median of {ab['config']['runs']} runs (MiB), before → after:")
            self.w()
            self.w("| item size | duplication | restore |")
            self.w("|---|---:|---:|")
            for size in mem["before"]:
                cells = []
                for what in ("dup", "restore"):
                    bf = stats([x[what]["rss_kib"] / 1024 for x in mem["before"][size]["runs"]])
                    af = stats([x[what]["rss_kib"] / 1024 for x in mem["after"][size]["runs"]])
                    cells.append(f"{fmt(bf, 0)} → {fmt(af, 0)}")
                self.w(f"| {size} | " + " | ".join(cells) + " |")
            self.w()
        pl = ab.get("planner")
        if pl:
            self.w("Planner, median (min–max, runs), before → after:")
            self.w()
            self.w("| entries | operation | before | after |")
            self.w("|---:|---|---:|---:|")
            after = {(r["entries"], r["op"]): r for r in pl["after"]}
            for r in pl["before"]:
                b = after.get((r["entries"], r["op"]))
                self.w(f"| {r['entries']:,} | {r['op']} | {self.planner_cell(r)} | {self.planner_cell(b)} |")
            self.w()

    @staticmethod
    def planner_cell(x):
        if not x:
            return "–"
        if x.get("timed_out"):
            return f"not finished after {x['median_s']:.0f} s"
        if x["median_s"] >= 1:
            return f"{x['median_s']:.2f} s ({x['min_s']:.2f}–{x['max_s']:.2f}, n={x['runs']})"
        return f"{x['median_s'] * 1e3:.1f} ms ({x['min_s'] * 1e3:.1f}–{x['max_s'] * 1e3:.1f}, n={x['runs']})"

    def planner(self):
        p = self.r.get("planner")
        if not p:
            return
        self.w("## Planner scale")
        self.w()
        self.w(f"`{p['command']}` (benches/planner.rs): the pure planner over a synthetic catalog "
               "(entries/100 work items, 67 daily originals each and duplicates of the 33 oldest; "
               "a policy selecting 9 in 10 items, uncopied instances only). Median of several "
               "runs (min–max).")
        self.w()
        self.w("| entries | select | plan_duplication | plan_restore | plan_expiry |")
        self.w("|---:|---:|---:|---:|---:|")
        by = {}
        for row in p["rows"]:
            by.setdefault(row["entries"], {})[row["op"]] = row
        for n, ops in sorted(by.items()):
            cells = []
            for op in ("select", "plan_duplication", "plan_restore", "plan_expiry"):
                cells.append(self.planner_cell(ops.get(op)))
            self.w(f"| {n:,} | " + " | ".join(cells) + " |")
        self.w()
        self.chart["planner"] = by
        big = by.get(100000, {}).get("plan_duplication")
        if big:
            self.summary.append(("planning a duplication run over 100,000 entries", "< 1 s",
                                 self.planner_cell(big),
                                 big["median_s"] < TARGETS["planner_100k_s"] and not big.get("timed_out")))

    def operator(self):
        src = HERE / "results-operator.json"
        if not src.exists():
            self.summary.append(("operator at rest with 50,000 CatalogEntries: API requests, memory",
                                 "< 1 req/s, < 256 MiB",
                                 "not measured: run python3 bench/operator_scale.py", None))
            return
        o = json.loads(src.read_text())
        rest = o["at_rest"]
        self.w("## Operator at scale")
        self.w()
        self.w(f"`{o['command']}` on {o['date']}: {o['entries']:,} CatalogEntries and "
               f"{o['policies']:,} DuplicationPolicies (each selecting one work item, every instance "
               "already copied) in one namespace of the e2e control plane (etcd, kube-apiserver, "
               "kube-controller-manager v1.34.4 on the same 2 cores); the operator (release build, "
               "out of cluster, the chart's ClusterRole) started against them. API requests are "
               "counted in the API server's audit log, the operator's user only; CPU and RSS from "
               "/proc. One run.")
        self.w()
        self.w("| phase | figure |")
        self.w("|---|---:|")
        self.w(f"| creating the objects with kubectl (not the operator) | {o['create_seconds']:.0f} s |")
        self.w(f"| start to ready (every watch listed and synced) | {o['ready_seconds']:.1f} s |")
        self.w(f"| start to settled (< 2% CPU and only Lease renewals for 10 s) | {o['settle_seconds']:.0f} s, "
               f"{o['settle_cpu_seconds']:.0f} CPU s, {o['settle_api_requests']:,} API requests |")
        self.w(f"| peak RSS while settling | {o['peak_rss_mib_settling']:.0f} MiB |")
        self.w(f"| at rest, {rest['seconds']:.0f} s: API requests | {rest['api_requests']} "
               f"({rest['api_requests_per_s']:.3f}/s) |")
        self.w(f"| at rest: CPU | {rest['cpu_percent']:.2f} % of one core |")
        self.w(f"| at rest: RSS | {rest['rss_mib_max']:.0f} MiB |")
        self.w()
        ok = rest["api_requests_per_s"] < 1 and rest["rss_mib_max"] < 256
        self.summary.append(("operator at rest with 50,000 CatalogEntries: API requests, memory",
                             "< 1 req/s, < 256 MiB",
                             f"{rest['api_requests_per_s']:.3f} req/s, {rest['rss_mib_max']:.0f} MiB",
                             ok))

    def targets(self):
        out = ["## Targets", "",
               "| target | goal | measured: median (min–max) | |", "|---|---|---|---|"]
        for t, goal, got, ok in self.summary:
            out.append(f"| {t} | {goal} | {got} | {'not measured' if ok is None else verdict(ok)} |")
        out += ["", "![benchmark chart](results.svg)", ""]
        return out

    def build(self):
        self.header()
        body_start = len(self.lines)
        self.setup()
        self.dup()
        self.restore()
        self.memory()
        self.sweep()
        self.planner()
        self.operator()
        self.ab()
        notes = HERE / "notes.md"
        if notes.exists():
            self.w(notes.read_text().rstrip())
            self.w()
        self.lines[body_start:body_start] = self.targets()
        return "\n".join(self.lines) + "\n"


# ---------------------------------------------------------------------------------------------
# SVG chart


class Svg:
    def __init__(self, w, h):
        self.w, self.h, self.parts = w, h, []

    def add(self, s):
        self.parts.append(s)

    def text(self, x, y, s, size=11, anchor="start", weight="normal", color="#222", rotate=None):
        tr = f' transform="rotate({rotate} {x:.1f} {y:.1f})"' if rotate else ""
        self.add(f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" '
                 f'font-weight="{weight}" fill="{color}"{tr}>{escape(str(s))}</text>')

    def line(self, x1, y1, x2, y2, color="#999", width=1, dash=None):
        d = f' stroke-dasharray="{dash}"' if dash else ""
        self.add(f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{color}" '
                 f'stroke-width="{width}"{d}/>')

    def rect(self, x, y, w, h, color):
        self.add(f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(w, 0):.1f}" height="{max(h, 0):.1f}" fill="{color}"/>')

    def render(self):
        return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{self.w}" height="{self.h}" '
                f'viewBox="0 0 {self.w} {self.h}" font-family="Helvetica, Arial, sans-serif">\n'
                f'<rect width="100%" height="100%" fill="white"/>\n' + "\n".join(self.parts) + "\n</svg>\n")


COLORS = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#b07aa1", "#9c755f"]


def nice_max(v):
    if v <= 0:
        return 1
    import math
    e = 10 ** math.floor(math.log10(v))
    for m in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if m * e >= v:
            return m * e
    return 10 * e


def bar_panel(svg, x0, y0, w, h, title, groups, series, values, ylabel, targets=(), log=False):
    """groups: x categories; series: names; values[g][s] = stats or None."""
    import math
    svg.text(x0 + w / 2, y0 + 14, title, size=13, anchor="middle", weight="bold")
    left, top, bottom = x0 + 48, y0 + 44, y0 + h - 34
    right = x0 + w - 8
    vals = [v for g in values for v in g if v]
    vmax = max([v["max"] for v in vals] + [t[0] for t in targets] + [1e-9])
    if log:
        vmin = min([v["min"] for v in vals if v["min"] > 0] + [t[0] for t in targets])
        lo, hi = math.floor(math.log10(vmin)), math.ceil(math.log10(vmax))
        hi = max(hi, lo + 1)

        def ypos(v):
            v = max(v, 10 ** lo)
            return bottom - (math.log10(v) - lo) / (hi - lo) * (bottom - top)
        ticks = [10 ** k for k in range(lo, hi + 1)]
    else:
        top_v = nice_max(vmax * 1.05)

        def ypos(v):
            return bottom - v / top_v * (bottom - top)
        ticks = [top_v * i / 4 for i in range(5)]
    for t in ticks:
        y = ypos(t)
        svg.line(left, y, right, y, color="#e5e5e5")
        lab = f"{t:.3g}"
        svg.text(left - 4, y + 4, lab, size=10, anchor="end", color="#555")
    svg.text(x0 + 12, (top + bottom) / 2, ylabel, size=10, anchor="middle", color="#555", rotate=-90)
    gw = (right - left) / max(len(groups), 1)
    bw = min(gw * 0.8 / max(len(series), 1), 28)
    for gi, g in enumerate(groups):
        gx = left + gi * gw + (gw - bw * len(series)) / 2
        for si, _ in enumerate(series):
            v = values[gi][si]
            if not v:
                continue
            x = gx + si * bw
            y = ypos(v["median"])
            svg.rect(x + 1, y, bw - 2, bottom - y, COLORS[si % len(COLORS)])
            if v["max"] > v["min"]:
                cx = x + bw / 2
                svg.line(cx, ypos(v["max"]), cx, ypos(v["min"]), color="#222")
                svg.line(cx - 3, ypos(v["max"]), cx + 3, ypos(v["max"]), color="#222")
                svg.line(cx - 3, ypos(v["min"]), cx + 3, ypos(v["min"]), color="#222")
        svg.text(left + gi * gw + gw / 2, bottom + 14, g, size=10, anchor="middle")
    svg.line(left, bottom, right, bottom, color="#555")
    for tv, tl in targets:
        y = ypos(tv)
        svg.line(left, y, right, y, color="#d62728", width=1.5, dash="5,3")
        svg.text(right - 2, y - 3, tl, size=9, anchor="end", color="#d62728")
    lx = left
    for si, s in enumerate(series):
        svg.rect(lx, y0 + 22, 10, 10, COLORS[si % len(COLORS)])
        svg.text(lx + 13, y0 + 31, s, size=10)
        lx += 18 + 6.2 * len(s)


def chart(rep):
    c = rep.chart
    W, H = 1000, 300
    panels = [k for k in ("dup", "peer", "restore", "memory", "sweep", "planner")
              if (k == "peer" and "dup" in c) or k in c]
    rows = (len(panels) + 1) // 2
    svg = Svg(W, H * rows + 10)
    for i, k in enumerate(panels):
        x0, y0 = (i % 2) * (W / 2), (i // 2) * H + 5
        pw = W / 2 - 10
        if k == "dup":
            names = list(c["dup"])
            groups = [rep.r["setup"][n]["backend"].replace("filesystem ", "fs ") for n in names]
            series = ["1 item", "4 items", "8 items"]
            vals = [[c["dup"][n][op]["vs_media"] for op in ("logical1", "logical4", "logical8")] for n in names]
            bar_panel(svg, x0, y0, pw, H - 10, "Logical duplication time / media duplication time",
                      groups, series, vals, "ratio (lower is better)", targets=[(0.2, "target for 1 item: 0.2")])
        elif k == "peer":
            names = list(c["dup"])
            groups = [rep.r["setup"][n]["backend"].replace("filesystem ", "fs ") for n in names]
            series = ["Mimeo logical, 8 items", "Mimeo media", "peer (cp+sync / rclone)"]
            vals = [[c["dup"][n]["logical8"]["mbps"], c["dup"][n]["media"]["mbps"], c["dup"][n]["peer"]["mbps"]]
                    for n in names]
            bar_panel(svg, x0, y0, pw, H - 10, "Duplication throughput vs peers (same bytes)",
                      groups, series, vals, "MB/s (higher is better)")
        elif k == "restore":
            names = list(c["restore"])
            groups = [rep.r["setup"][n]["backend"].replace("filesystem ", "fs ") for n in names]
            series = ["from original", "from duplicate", "floor (read)", "floor + write"]
            vals = [[c["restore"][n][op] for op in ("original", "duplicate", "floor", "floor_rw")] for n in names]
            bar_panel(svg, x0, y0, pw, H - 10, "Restore of one item", groups, series, vals, "seconds (log)",
                      log=True)
        elif k == "memory":
            groups = [p[0] for p in c["memory"]]
            vals = [[p[1], p[2]] for p in c["memory"]]
            bar_panel(svg, x0, y0, pw, H - 10, "Peak RSS by work item size", groups,
                      ["duplication", "restore"], vals, "MiB", targets=[(128, "target: 128 MiB")])
        elif k == "sweep":
            label = next(iter(c["sweep"]))
            pts = c["sweep"][label]
            groups = [p[0] for p in pts]
            vals = [[p[1], p[2]] for p in pts]
            where = "tmpfs" if label == "fs" else "S3"
            bar_panel(svg, x0, y0, pw, H - 10, f"Block size sweep ({where})", groups,
                      ["logical, 1 item", "media, all volumes"], vals, "seconds")
        elif k == "planner":
            by = c["planner"]
            sizes = sorted(by)
            ops = ["select", "plan_duplication", "plan_restore", "plan_expiry"]
            vals = [[({"median": by[n][op]["median_s"], "min": by[n][op]["min_s"], "max": by[n][op]["max_s"]}
                      if op in by[n] else None) for op in ops] for n in sizes]
            bar_panel(svg, x0, y0, pw, H - 10, "Planner time by catalog size",
                      [f"{n:,} entries" for n in sizes], ops, vals, "seconds (log)",
                      targets=[(1.0, "target: 1 s")], log=True)
    return svg.render()


def main():
    src = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "results.json"
    r = json.loads(src.read_text())
    rep = Report(r)
    md = rep.build()
    out = src.parent
    (out / "results.md").write_text(md)
    (out / "results.svg").write_text(chart(rep))
    print(f"wrote {out / 'results.md'} and {out / 'results.svg'}")


if __name__ == "__main__":
    main()
