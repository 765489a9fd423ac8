#!/usr/bin/env python3
"""Mimeo benchmark driver: generates data, runs Mimeo and its peers side by side, writes
bench/results.json, then bench/report.py turns that into results.md and results.svg.

Started by bench/run.sh (which installs the tools and builds the release binary); run
`bench/run.sh --help` for the options. Python standard library only.

Every figure is the median of --runs runs (min and max kept). A comparison is a ratio taken
inside one round (both sides measured back to back, order rotating between rounds), and the
median of those per-round ratios is reported: the machine is shared and noisy.
"""

import argparse
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
UNITS = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30}
S3_KEY, S3_SECRET = "mimeo-bench", "mimeo-bench-secret"
# The encrypted media class's key (a benchmark key, 32 bytes as hex; never use it for data).
VAULT_KEY = "6d696d656f2d62656e63682d6b65792d6e6f742d666f722d7265616c2d757365"
ITEMS = 8
STREAMS = 4
PARTS_PER_ITEM = 4


# ---------------------------------------------------------------------------------------------
# small helpers


def qty(s):
    m = re.fullmatch(r"(\d+)(Ki|Mi|Gi)?", s.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"{s!r} is not a quantity like 256Mi")
    return int(m[1]) * UNITS.get(m[2], 1)


def qty_list(s):
    return [qty(x) for x in s.split(",") if x.strip()]


def fmt_qty(n):
    for unit in ("Gi", "Mi", "Ki"):
        if n >= UNITS[unit] and n % UNITS[unit] == 0:
            return f"{n // UNITS[unit]}{unit}"
    return str(n)


T0 = time.monotonic()


def log(msg):
    el = time.monotonic() - T0
    print(f"[{int(el) // 60:3d}:{int(el) % 60:02d}] {msg}", flush=True)


def parse_time(s):
    """RFC 3339 with up to nanoseconds → seconds since the epoch."""
    m = re.fullmatch(r"(.*T\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", s)
    if not m:
        raise ValueError(f"unexpected time {s!r}")
    base = datetime.fromisoformat(m[1] + ("+00:00" if m[3] == "Z" else m[3]))
    frac = float("0." + m[2]) if m[2] else 0.0
    return base.timestamp() + frac


def summary(values):
    v = [x for x in values if x is not None]
    if not v:
        return None
    return {"median": statistics.median(v), "min": min(v), "max": max(v), "n": len(v)}


def free_bytes(path):
    p = Path(path)
    while not p.exists():
        p = p.parent
    st = os.statvfs(p)
    return st.f_bavail * st.f_frsize


def rmtree(p):
    shutil.rmtree(p, ignore_errors=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Timer:
    """Runs commands, timing them and (with /usr/bin/time -v) recording their peak RSS."""

    def __init__(self, logdir):
        self.logdir = Path(logdir)
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.n = 0
        self.gnu_time = shutil.which("time", path="/usr/bin") or shutil.which("time")

    def run(self, cmd, name, shell=False, env=None, check=True, rss=False):
        """Returns (wall seconds, peak RSS in KiB or None, stdout)."""
        self.n += 1
        base = self.logdir / f"{self.n:04d}-{name}"
        out_path, err_path = base.with_suffix(".out"), base.with_suffix(".err")
        tv = base.with_suffix(".time")
        argv = cmd
        if rss and self.gnu_time:
            argv = [self.gnu_time, "-v", "-o", str(tv)] + (["sh", "-c", cmd] if shell else cmd)
            shell = False
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            t = time.monotonic()
            p = subprocess.run(argv, shell=shell, stdout=out, stderr=err, env=env)
            wall = time.monotonic() - t
        if check and p.returncode != 0:
            sys.stderr.write(err_path.read_text(errors="replace")[-4000:])
            raise SystemExit(f"command failed ({p.returncode}): {cmd} (log: {base}.*)")
        peak = None
        self.last_cpu = None
        if rss and tv.exists():
            t = tv.read_text()
            m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", t)
            peak = int(m[1]) if m else None
            cpu = re.findall(r"(?:User|System) time \(seconds\): ([\d.]+)", t)
            self.last_cpu = sum(float(x) for x in cpu) if cpu else None
        return wall, peak, out_path.read_text(errors="replace")


# ---------------------------------------------------------------------------------------------
# YAML builders


def media_class(name, backend, block, volume, encrypt=False):
    crypt = ", encryption: {keySecretRef: {name: vault-key}}" if encrypt else ""
    return (
        f"apiVersion: mimeo.dev/v1alpha1\nkind: MediaClass\nmetadata: {{name: {name}}}\n"
        f"spec: {{backend: {backend}, volumeCapacity: {fmt_qty(volume)}, "
        f"blockSize: {fmt_qty(block)}{crypt}}}\n"
    )


def vault_key_yaml():
    return ("apiVersion: v1\nkind: Secret\nmetadata: {name: vault-key}\n"
            f"stringData: {{MIMEO_ENCRYPTION_KEY: {VAULT_KEY}}}\n")


def secret_yaml():
    return (
        "apiVersion: v1\nkind: Secret\nmetadata: {name: s3-creds}\n"
        f"stringData: {{AWS_ACCESS_KEY_ID: {S3_KEY}, AWS_SECRET_ACCESS_KEY: {S3_SECRET}}}\n"
    )


def docs(*parts):
    return "---\n".join(parts)


class Backend:
    """Where a trail's media live: a directory (`fs`) or a bucket+prefix on the s3s-fs server."""

    def __init__(self, kind, label, root=None, s3=None, bucket=None):
        self.kind, self.label, self.root, self.s3, self.bucket = kind, label, root, s3, bucket

    def spec(self, sub):
        if self.kind == "fs":
            path = Path(self.root) / sub
            path.mkdir(parents=True, exist_ok=True)
            return f"{{filesystem: {{path: {path}}}}}"
        return (
            f"{{s3: {{endpoint: '{self.s3.endpoint}', bucket: {self.bucket}, prefix: {sub}, "
            "forcePathStyle: true, region: us-east-1, credentialsSecretRef: {name: s3-creds}}}"
        )

    def path(self, sub):
        """Local directory holding the objects under `sub` (s3s-fs keeps objects as files)."""
        if self.kind == "fs":
            return Path(self.root) / sub
        return self.s3.data / self.bucket / sub

    def remove(self, sub):
        rmtree(self.path(sub))


# ---------------------------------------------------------------------------------------------
# the s3s-fs server and rclone


class S3Server:
    def __init__(self, data, logdir):
        self.data = Path(data)
        rmtree(self.data)
        self.data.mkdir(parents=True)
        binary = shutil.which("s3s-fs") or str(Path.home() / ".cargo/bin/s3s-fs")
        self.version = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout.strip()
        self.log = open(Path(logdir) / "s3s-fs.log", "wb")
        for _ in range(5):
            port = free_port()
            self.proc = subprocess.Popen(
                [binary, "--host", "127.0.0.1", "--port", str(port), "--access-key", S3_KEY,
                 "--secret-key", S3_SECRET, str(self.data)],
                stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    self.endpoint = f"http://127.0.0.1:{port}"
                    return
                except OSError:
                    time.sleep(0.05)
            self.proc.kill()
            self.proc.wait()
        raise SystemExit("s3s-fs did not start (see s3s-fs.log)")

    def cpu(self):
        """CPU seconds (user + system) the server has used so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def bucket(self, name):
        (self.data / name).mkdir(parents=True, exist_ok=True)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def rclone_env(self, conf):
        # AWS_* settings of the host (e.g. AWS_CA_BUNDLE) are for real AWS, not this server.
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env["RCLONE_CONFIG"] = str(conf)
        # Two remotes with the same settings: rclone never copies server-side across remotes
        # (unless --server-side-across-configs), so `rclone copy a: b:` streams client side.
        for r in ("A", "B"):
            p = f"RCLONE_CONFIG_S3{r}_"
            env.update({p + "TYPE": "s3", p + "PROVIDER": "Other", p + "ENDPOINT": self.endpoint,
                        p + "ACCESS_KEY_ID": S3_KEY, p + "SECRET_ACCESS_KEY": S3_SECRET,
                        p + "REGION": "us-east-1", p + "FORCE_PATH_STYLE": "true"})
        return env


# ---------------------------------------------------------------------------------------------
# the benchmark


class Bench:
    def __init__(self, args):
        self.a = args
        self.work = Path(args.dir)
        self.fast = Path(args.fast_dir) if args.fast_dir else None
        # A private copy: a concurrent `cargo build` must not swap the binary mid-run.
        (self.work / "bin").mkdir(parents=True, exist_ok=True)
        self.mimeo = str(self.work / "bin" / "mimeo")
        shutil.copy2(args.mimeo, self.mimeo)
        self.mimeo_b = None
        if args.mimeo_b:
            self.mimeo_b = str(self.work / "bin" / "mimeo-b")
            shutil.copy2(args.mimeo_b, self.mimeo_b)
        self.timer = Timer(self.work / "logs")
        self.results = {"config": {}, "machine": {}, "runs": {}}
        self.run_id = 0

    # -- basic operations --------------------------------------------------------------------

    def apply(self, state, yaml_text, name, rss=True, check=True, binary=None):
        f = Path(state).parent / f"{Path(state).name}-{name}.yaml"
        f.write_text(yaml_text)
        return self.timer.run([binary or self.mimeo, "local", "--state", str(state), "apply", "-f", str(f)],
                              name, rss=rss, check=check)

    def get(self, state, kind, name):
        p = subprocess.run([self.mimeo, "local", "--state", str(state), "get", kind, name, "-o", "json"],
                           capture_output=True, text=True, check=True)
        v = json.loads(p.stdout)
        if isinstance(v, dict) and "items" in v:
            v = v["items"]
        if isinstance(v, list):
            v = next(x for x in v if x["metadata"]["name"] == name)
        return v

    def entries(self, state):
        p = subprocess.run([self.mimeo, "local", "--state", str(state), "get", "catalogentries", "-o", "json"],
                           capture_output=True, text=True, check=True)
        v = json.loads(p.stdout)
        return v["items"] if isinstance(v, dict) else v

    def next_id(self):
        self.run_id += 1
        return self.run_id

    # -- data ----------------------------------------------------------------------------------

    def gen_file(self, path, size, seed):
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() and path.stat().st_size == size:
            return
        tmp = path.with_suffix(".tmp")
        if shutil.which("openssl"):
            cmd = (f"openssl enc -aes-128-ctr -nosalt -pbkdf2 -pass pass:{seed} -in /dev/zero "
                   f"2>/dev/null | head -c {size} > {tmp}")
        else:
            cmd = f"head -c {size} /dev/urandom > {tmp}"
        subprocess.run(cmd, shell=True, check=True)
        tmp.rename(path)

    def gen_items(self, root, size, count, seed):
        """`count` work items of `size` bytes of pseudo-random data, in PARTS_PER_ITEM files."""
        parts = PARTS_PER_ITEM if size >= PARTS_PER_ITEM * (1 << 20) else 1
        for i in range(1, count + 1):
            for p in range(parts):
                self.gen_file(Path(root) / f"item-{i}" / f"part-{p}.bin", size // parts, f"{seed}-{i}-{p}")
        return [Path(root) / f"item-{i}" for i in range(1, count + 1)]

    # -- trails --------------------------------------------------------------------------------

    def make_base(self, name, backend, items, block, volume):
        """Backs up `items` with 4 streams onto a fresh trail; returns the template state."""
        state = self.work / "states" / f"base-{name}"
        rmtree(state)
        state.parent.mkdir(parents=True, exist_ok=True)
        backend.remove(f"src-{name}")
        work_items = "\n".join(f"    - {{name: {p.name}, source: {{path: {p}}}}}" for p in items)
        y = docs(
            secret_yaml(),
            media_class("src", backend.spec(f"src-{name}"), block, volume),
            "apiVersion: mimeo.dev/v1alpha1\nkind: BackupTrail\nmetadata: {name: nightly}\n"
            f"spec:\n  mediaClassName: src\n  retention: 30d\n  streams: {STREAMS}\n"
            f"  workItems:\n{work_items}\n",
        )
        wall, rss, out = self.apply(state, y, f"backup-{name}")
        m = re.search(r"backed up (\d+) work items, (\d+) bytes in ([\d.]+)s", out)
        trail = self.get(state, "backuptrails", "nightly")
        ents = [e for e in self.entries(state) if e["spec"]["trail"] == "nightly"]
        info = {
            "backend": backend.label, "block": block, "volume": volume,
            "seconds": float(m[3]) if m else wall, "wall": wall, "rss_kib": rss,
            "stream_bytes": int(m[2]) if m else None,
            "trail_bytes": trail["status"]["bytes"],
            "volumes": len(trail["status"]["volumes"]),
            # Physical bytes of each item's blocks (headers included): what a logical copy reads.
            "item_extent_bytes": {e["spec"]["workItem"]: sum(x["length"] for x in e["spec"]["extents"]) for e in ents},
            "item_extents": {e["spec"]["workItem"]: len(e["spec"]["extents"]) for e in ents},
            "item_stream_bytes": {e["spec"]["workItem"]: e["spec"]["bytes"] for e in ents},
        }
        log(f"  backup {name}: {info['trail_bytes'] / 2**20:.0f} MiB on {info['volumes']} volumes "
            f"in {info['seconds']:.1f}s")
        return state, info

    def fresh_state(self, base, tag):
        state = self.work / "states" / f"run-{tag}"
        rmtree(state)
        shutil.copytree(base, state)
        return state

    def duplicate(self, base, backend, mode, items, block, volume, tag, layout="Sequential",
                  parallelism=None, keep=False, binary=None, encrypt=False):
        """One duplication run into a fresh target trail (an encrypted media class with
        `encrypt`). Returns its figures (and the state and target when `keep`). `seconds` is the
        whole `mimeo local apply` command's wall time, as the peers' are; `task_seconds` the
        policy run's own duration (status.lastRun)."""
        n = self.next_id()
        state = self.fresh_state(base, f"{tag}-{n}")
        sub = f"dst-{tag}-{n}"
        backend.remove(sub)
        sel = "" if items is None else f", selection: {{workItems: [{', '.join(items)}]}}"
        par = f", parallelism: {parallelism}" if parallelism else ""
        y = docs(
            *([vault_key_yaml()] if encrypt else []),
            media_class("dst", backend.spec(sub), block, volume, encrypt),
            "apiVersion: mimeo.dev/v1alpha1\nkind: DuplicationTrail\nmetadata: {name: dup}\n"
            f"spec: {{mediaClassName: dst, retention: 7d, layout: {layout}}}\n",
            "apiVersion: mimeo.dev/v1alpha1\nkind: DuplicationPolicy\nmetadata: {name: p}\n"
            f"spec: {{sourceTrails: [nightly], targets: [dup], mode: {mode}{par}{sel}}}\n",
        )
        s0 = self.server_cpu()
        wall, rss, _ = self.apply(state, y, f"dup-{tag}", binary=binary)
        cpu, server = self.timer.last_cpu, self.server_cpu(s0)
        st = self.get(state, "duplicationpolicies", "p")["status"]["lastRun"]
        if st.get("outcome") != "Succeeded":
            raise SystemExit(f"duplication {tag} failed: {st}")
        dt = self.get(state, "duplicationtrails", "dup")["status"]
        r = {
            "seconds": wall, "task_seconds": parse_time(st["end"]) - parse_time(st["start"]),
            "rss_kib": rss, "instances": st["instances"],
            "written": dt["bytes"],  # physical bytes on the target volumes
            "cpu": cpu, "server_cpu": server,
        }
        if keep:
            return r, state, sub
        rmtree(state)
        backend.remove(sub)
        return r

    def restore(self, state, source, target, tag, binary=None):
        n = self.next_id()
        rmtree(target)
        src = "Original" if source == "Original" else f"{{trail: {source}}}"
        y = ("apiVersion: mimeo.dev/v1alpha1\nkind: Restore\nmetadata: {name: r-%d}\n"
             "spec: {workItem: item-1, source: %s, target: {path: %s}}\n" % (n, src, target))
        s0 = self.server_cpu()
        wall, rss, _ = self.apply(state, y, f"restore-{tag}", binary=binary)
        cpu, server = self.timer.last_cpu, self.server_cpu(s0)
        st = self.get(state, "restores", f"r-{n}")["status"]
        if st.get("phase") != "Succeeded":
            raise SystemExit(f"restore {tag} failed: {st}")
        return {"seconds": wall, "task_seconds": st["durationSeconds"], "rss_kib": rss,
                "bytes": st["bytes"], "from": st["restoredFrom"]["trail"], "cpu": cpu,
                "server_cpu": server}

    def server_cpu(self, since=None):
        """The S3 server's CPU seconds so far, or used since `since`."""
        if not hasattr(self, "s3"):
            return None
        now = self.s3.cpu()
        return now if since is None else now - since

    def shell(self, cmd, name, env=None):
        wall, _, _ = self.timer.run(cmd, name, shell=True, env=env)
        return wall

    def peer(self, cmd, name, env=None):
        """A peer command, with its CPU time (and the S3 server's)."""
        s0 = self.server_cpu()
        wall, _, _ = self.timer.run(cmd, name, shell=True, env=env, rss=True)
        return {"seconds": wall, "cpu": self.timer.last_cpu, "server_cpu": self.server_cpu(s0)}

    # -- sections ------------------------------------------------------------------------------

    def machine(self):
        def out(cmd):
            try:
                return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
            except OSError:
                return ""
        cpu = out("lscpu | sed -n 's/^Model name: *//p'") or platform.processor()
        self.results["machine"] = {
            "nproc": out("nproc"), "cpu": cpu, "free_h": out("free -h"),
            "kernel": platform.release(), "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "commit": out(f"git -C {ROOT} rev-parse --short HEAD"),
            "dirty": bool(out(f"git -C {ROOT} status --porcelain -- src Cargo.toml Cargo.lock")),
            "rclone": out("rclone version 2>/dev/null | head -1"),
            "mimeo": out(f"{self.mimeo} --version"),
            "loadavg_start": out("cat /proc/loadavg"),
            "disk": out(f"df -h --output=source,fstype,size,avail {self.work} | tail -1"),
            "fast": out(f"df -h --output=source,fstype,size,avail {self.fast} | tail -1") if self.fast else "",
        }

    def setup(self):
        a = self.a
        log(f"generating {ITEMS} work items of {fmt_qty(a.scale)} in {self.work / 'data'}")
        self.items = self.gen_items(self.work / "data", a.scale, ITEMS, "mimeo-bench")
        self.s3 = S3Server((self.fast or self.work) / "s3", self.work / "logs")
        for b in ("media", "peer", "floor"):
            self.s3.bucket(b)
        self.results["machine"]["s3s_fs"] = self.s3.version
        self.rclone_conf = self.work / "rclone.conf"
        self.rclone_conf.write_text("")
        self.renv = self.s3.rclone_env(self.rclone_conf)
        self.backends = {"disk": Backend("fs", "filesystem (disk)", root=self.work / "media")}
        if self.fast:
            self.backends["tmpfs"] = Backend("fs", "filesystem (tmpfs)", root=self.fast / "media")
        self.backends["s3"] = Backend("s3", "S3 (s3s-fs, loopback)", s3=self.s3, bucket="media")
        if self.a.backends:
            self.backends = {k: v for k, v in self.backends.items() if k in self.a.backends}
        self.bases = {}
        self.results["setup"] = {}
        for name, be in self.backends.items():
            state, info = self.make_base(name, be, self.items, a.block, a.volume)
            self.bases[name] = state
            self.results["setup"][name] = info

    def dup_rounds(self):
        """Media duplication of all volumes vs logical duplication of 1, 4 and 8 items, and the
        peer (cp / rclone copy) of the same bytes, per backend, per round."""
        a = self.a
        sel = {"logical1": ["item-1"], "logical4": [f"item-{i}" for i in range(1, 5)],
               "logical8": None}
        out = self.results["runs"].setdefault("dup", {})
        for name, be in self.backends.items():
            base = self.bases[name]
            setup = self.results["setup"][name]
            rounds = out.setdefault(name, [])
            src_dir = be.path(f"src-{name}") / "nightly"
            for r in range(a.runs):
                log(f"duplication {name}: round {r + 1}/{a.runs}")
                ops = ["media", "logical1", "logical4", "logical8", "peer"]
                k = r % len(ops)
                ops = ops[k:] + ops[:k]
                row = {}
                for op in ops:
                    if op == "media":
                        row[op] = self.duplicate(base, be, "Media", None, a.block, a.volume, f"{name}-media")
                        row[op]["read"] = setup["trail_bytes"]
                    elif op.startswith("logical"):
                        row[op] = self.duplicate(base, be, "Logical", sel[op], a.block, a.volume,
                                                 f"{name}-{op}", parallelism=a.parallelism)
                        wanted = sel[op] or [f"item-{i}" for i in range(1, ITEMS + 1)]
                        row[op]["read"] = sum(setup["item_extent_bytes"][w] for w in wanted)
                    else:
                        row[op] = self.peer_copy(name, be, src_dir)
                    log(f"    {op:9s} {row[op]['seconds']:7.2f}s")
                rounds.append(row)

    def peer_copy(self, name, be, src_dir):
        n = self.next_id()
        if be.kind == "fs":
            dst = be.root / f"peer-{n}"
            rmtree(dst)
            cp = self.peer(f"cp -r {src_dir} {dst}", f"cp-{name}")
            t_cp = cp["seconds"]
            # Mimeo makes every object durable (fsync) before it counts; so must the peer.
            t_sync = self.shell(f"find {dst} -type f -exec sync {{}} +", f"sync-{name}")
            size = int(subprocess.run(f"du -sb {dst} | cut -f1", shell=True, capture_output=True,
                                      text=True).stdout)
            rmtree(dst)
            return {"seconds": t_cp + t_sync, "cp_only": t_cp, "bytes": size, "cpu": cp["cpu"]}
        # Trailing slashes: without them rclone first HEADs the path as a possible object, which
        # s3s-fs answers (500) only after a long time when it is a directory.
        dst = f"s3b:peer/r{n}/nightly/"
        r = self.peer(f"rclone copy s3a:media/src-{name}/nightly/ {dst}", "rclone-copy", env=self.renv)
        size = int(subprocess.run(f"du -sb {self.s3.data / 'peer' / f'r{n}'} | cut -f1", shell=True,
                                  capture_output=True, text=True).stdout)
        rmtree(self.s3.data / "peer" / f"r{n}")
        return dict(r, bytes=size)

    def restore_rounds(self):
        """Restore of item-1 from the interleaved original vs from a Sequential duplicate, vs the
        floor: plain tools reading the same bytes and writing them to a file in the same place
        (`cat` of the item's files to one file, then `sync` of it; `rclone copyto` of one object
        of that size), and the bare read (`cat` to /dev/null, `rclone cat`) for reference."""
        a = self.a
        out = self.results["runs"].setdefault("restore", {})
        sink = (self.fast or self.work) / "restore"
        sink.mkdir(parents=True, exist_ok=True)
        item = self.items[0]
        item_bytes = sum(f.stat().st_size for f in item.iterdir())
        # One object of the same size, for the S3 floor.
        self.shell(f"cat {item}/* | rclone rcat s3a:floor/item-1.bin", "rcat-floor", env=self.renv)
        for name in [n for n in ("disk", "s3") if n in self.backends]:
            be = self.backends[name]
            _, state, sub = self.duplicate(self.bases[name], be, "Logical", ["item-1"], a.block, a.volume,
                                           f"{name}-rbase", keep=True)
            rounds = out.setdefault(name, [])
            for r in range(a.runs):
                log(f"restore {name}: round {r + 1}/{a.runs}")
                ops = ["original", "duplicate", "floor", "read"]
                k = r % len(ops)
                ops = ops[k:] + ops[:k]
                row = {}
                for op in ops:
                    target = sink / f"{name}-{op}"
                    if op == "original":
                        row[op] = self.restore(state, "Original", target, f"{name}-orig")
                    elif op == "duplicate":
                        row[op] = self.restore(state, "dup", target, f"{name}-dup")
                    elif op == "read":
                        cmd = (f"cat {item}/* > /dev/null" if be.kind == "fs"
                               else "rclone cat s3a:floor/item-1.bin > /dev/null")
                        row[op] = self.peer(cmd, f"read-{name}", env=self.renv)
                    else:
                        rmtree(target)
                        cmd = (f"mkdir -p {target} && cat {item}/* > {target}/item-1.bin && sync {target}/item-1.bin"
                               if be.kind == "fs"
                               else f"rclone copyto s3a:floor/item-1.bin {target}/item-1.bin")
                        row[op] = self.peer(cmd, f"floor-{name}", env=self.renv)
                    if op in ("original", "duplicate"):
                        got = sum(f.stat().st_size for f in target.rglob("*") if f.is_file())
                        if got != item_bytes:
                            raise SystemExit(f"restore {name}/{op} wrote {got} bytes, expected {item_bytes}")
                        if r == 0:
                            subprocess.run(f"cmp {item}/part-0.bin {target}/part-0.bin", shell=True, check=True)
                    rmtree(target)
                    log(f"    {op:9s} {row[op]['seconds']:7.2f}s")
                rounds.append(row)
            rmtree(state)
            be.remove(sub)
        self.results["restore_item_bytes"] = item_bytes

    def crypt_rounds(self):
        """Logical duplication of all 8 items to an encrypted media class vs to a plain one, and
        a restore of item-1 from each copy, back to back in each round (order alternating)."""
        a = self.a
        out = self.results["runs"].setdefault("crypt", {})
        sink = (self.fast or self.work) / "restore"
        sink.mkdir(parents=True, exist_ok=True)
        item_bytes = sum(f.stat().st_size for f in self.items[0].iterdir())
        for name, be in self.backends.items():
            rounds = out.setdefault(name, [])
            for r in range(a.runs):
                log(f"encryption {name}: round {r + 1}/{a.runs}")
                row = {}
                for kind in ("plain", "encrypted") if r % 2 == 0 else ("encrypted", "plain"):
                    dup, state, sub = self.duplicate(self.bases[name], be, "Logical", None, a.block, a.volume,
                                                     f"{name}-{kind}", keep=True, encrypt=kind == "encrypted",
                                                     parallelism=a.parallelism)
                    target = sink / f"crypt-{name}"
                    rs = self.restore(state, "dup", target, f"{name}-{kind}")
                    if rs["bytes"] < item_bytes or rs["from"] != "dup":
                        raise SystemExit(f"restore from the {kind} copy on {name}: {rs}")
                    if r == 0:
                        subprocess.run(f"cmp {self.items[0]}/part-0.bin {target}/part-0.bin", shell=True,
                                       check=True)
                    rmtree(target)
                    rmtree(state)
                    be.remove(sub)
                    row[f"dup_{kind}"], row[f"restore_{kind}"] = dup, rs
                    log(f"    {kind:9s} duplication {dup['seconds']:7.2f}s  restore {rs['seconds']:6.2f}s")
                rounds.append(row)

    def memory(self):
        """Peak RSS of logical duplication and of restore, for one work item of each size."""
        a = self.a
        out = self.results["runs"].setdefault("memory", {})
        sink = self.fast or self.work
        for size in a.mem_sizes:
            need = 3 * size + (64 << 20)
            if free_bytes(sink) < 2 * size + (64 << 20) or free_bytes(self.work) < 2 * size:
                log(f"memory {fmt_qty(size)}: skipped, not enough free space (needs ~{need / 2**30:.1f} GiB)")
                out[fmt_qty(size)] = {"skipped": "not enough free space"}
                continue
            log(f"memory: one work item of {fmt_qty(size)}")
            data = sink / "memdata"
            rmtree(data)
            [item] = self.gen_items(data, size, 1, f"mem-{size}")
            be_src = Backend("fs", "disk", root=self.work / "memmedia")
            state, info = self.make_base(f"mem-{fmt_qty(size)}", be_src, [item], a.block, a.volume)
            rmtree(data)  # the trail holds it now; free the space for the copies
            be_dst = Backend("fs", "sink", root=sink / "memdup")
            rows = []
            for r in range(a.runs):
                d, st, sub = self.duplicate(state, be_dst, "Logical", ["item-1"], a.block, a.volume,
                                            f"mem-{fmt_qty(size)}", keep=True)
                rs = self.restore(st, "dup", sink / "memrestore", f"mem-{fmt_qty(size)}")
                rmtree(sink / "memrestore")
                rmtree(st)
                be_dst.remove(sub)
                rows.append({"dup": d, "restore": rs})
                log(f"    run {r + 1}: duplication {d['rss_kib'] / 1024:.0f} MiB ({d['seconds']:.1f}s), "
                    f"restore {rs['rss_kib'] / 1024:.0f} MiB ({rs['seconds']:.1f}s)")
            out[fmt_qty(size)] = {"backup": info, "runs": rows}
            rmtree(state)
            be_src.remove(f"src-mem-{fmt_qty(size)}")

    def sweep(self):
        """Block size sweep: logical duplication of 1 of 8 items (and media duplication of all
        volumes, for the ratio) with source and target at the same block size."""
        a = self.a
        out = self.results["runs"].setdefault("sweep", {})
        targets = [("fs", self.backends.get("tmpfs") or self.backends["disk"])]
        if a.sweep_s3:
            targets.append(("s3", self.backends["s3"]))
        for label, be in targets:
            res = out.setdefault(label, {})
            for block in a.sweep:
                name = f"sweep-{label}-{fmt_qty(block)}"
                log(f"block size sweep: {label}, {fmt_qty(block)} blocks")
                state, info = self.make_base(name, be, self.items, block, a.volume)
                rows = []
                for r in range(a.runs):
                    ops = ["logical1", "media"] if r % 2 == 0 else ["media", "logical1"]
                    row = {}
                    for op in ops:
                        if op == "media":
                            row[op] = self.duplicate(state, be, "Media", None, block, a.volume, name + "-media")
                        else:
                            row[op] = self.duplicate(state, be, "Logical", ["item-1"], block, a.volume,
                                                     name + "-l1")
                    rows.append(row)
                    log(f"    logical1 {row['logical1']['seconds']:6.2f}s  media {row['media']['seconds']:6.2f}s")
                res[fmt_qty(block)] = {"backup": info, "runs": rows}
                rmtree(state)
                be.remove(f"src-{name}")

    def ab(self):
        """Before/after: the same operations with --mimeo (a) and --mimeo-b (b), back to back in
        each round (the order alternating), to measure a patch on this noisy machine."""
        if not self.mimeo_b:
            raise SystemExit("--only ab needs --mimeo-b")
        a = self.a
        out = self.results["runs"].setdefault("ab", {})
        sink = (self.fast or self.work) / "restore"
        sink.mkdir(parents=True, exist_ok=True)
        bins = {"a": self.mimeo, "b": self.mimeo_b}
        for name, be in self.backends.items():
            base = self.bases[name]
            _, rstate, sub = self.duplicate(base, be, "Logical", ["item-1"], a.block, a.volume,
                                            f"{name}-abbase", keep=True)
            rows = out.setdefault(name, [])
            for r in range(a.runs):
                log(f"a/b {name}: round {r + 1}/{a.runs}")
                row = {}
                for op in ("media", "logical1", "logical8", "restore_original", "restore_duplicate"):
                    for who in ("a", "b") if r % 2 == 0 else ("b", "a"):
                        binary = bins[who]
                        if op == "media":
                            v = self.duplicate(base, be, "Media", None, a.block, a.volume, f"{name}-ab-media",
                                               binary=binary)
                        elif op.startswith("logical"):
                            items = ["item-1"] if op == "logical1" else None
                            v = self.duplicate(base, be, "Logical", items, a.block, a.volume,
                                               f"{name}-ab-{op}", parallelism=a.parallelism, binary=binary)
                        else:
                            target = sink / f"ab-{name}"
                            src = "Original" if op == "restore_original" else "dup"
                            v = self.restore(rstate, src, target, f"{name}-ab", binary=binary)
                            rmtree(target)
                        row[f"{op}@{who}"] = v
                    log(f"    {op:18s} a {row[op + '@a']['seconds']:7.2f}s  b {row[op + '@b']['seconds']:7.2f}s")
                rows.append(row)
            rmtree(rstate)
            be.remove(sub)

    def planner(self):
        log("planner scale (cargo bench --bench planner)")
        cmd = "cargo bench --bench planner"
        env = dict(os.environ)
        if self.a.quick:
            env["MIMEO_PLANNER_SIZES"] = "1000,10000"
        p = subprocess.run(cmd, shell=True, cwd=ROOT, capture_output=True, text=True, env=env)
        (self.work / "logs" / "planner.out").write_text(p.stdout + p.stderr)
        rows = [json.loads(l[6:]) for l in p.stdout.splitlines() if l.startswith("BENCH ")]
        if p.returncode != 0 or not rows:
            log(f"  planner bench failed (see {self.work / 'logs' / 'planner.out'})")
        for r in rows:
            log(f"  {r['entries']:>7} entries {r['op']:<17} {r['median_s'] * 1000:10.1f} ms")
        self.results["planner"] = {"command": cmd, "rows": rows}

    # -- driver --------------------------------------------------------------------------------

    def run(self):
        a = self.a
        self.results["config"] = {
            "scale": a.scale, "items": ITEMS, "streams": STREAMS, "block": a.block,
            "volume": a.volume, "runs": a.runs, "quick": a.quick, "parallelism": a.parallelism,
            "mem_sizes": a.mem_sizes, "sweep": a.sweep, "sweep_s3": a.sweep_s3,
            "work": str(self.work), "fast": str(self.fast) if self.fast else None,
            "command": a.command,
        }
        self.work.mkdir(parents=True, exist_ok=True)
        if self.fast:
            self.fast.mkdir(parents=True, exist_ok=True)
        self.machine()
        sections = a.only or ["dup", "restore", "crypt", "memory", "sweep", "planner"]
        try:
            if set(sections) & {"dup", "restore", "crypt", "sweep", "ab"}:
                self.setup()
            for s in sections:
                getattr(self, {"dup": "dup_rounds", "restore": "restore_rounds", "crypt": "crypt_rounds",
                               "memory": "memory", "sweep": "sweep", "planner": "planner", "ab": "ab"}[s])()
                self.save()
        finally:
            if hasattr(self, "s3"):
                self.s3.stop()
            self.results["machine"]["loadavg_end"] = open("/proc/loadavg").read().strip()
            self.results["elapsed_s"] = time.monotonic() - T0
            self.save()
            if not a.keep:
                for d in ("states", "media", "memmedia"):
                    rmtree(self.work / d)
                if self.fast:
                    rmtree(self.fast)
        log(f"done in {(time.monotonic() - T0) / 60:.1f} min")

    def save(self):
        out = Path(self.a.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(self.results, indent=1) + "\n")


def main():
    p = argparse.ArgumentParser(prog="bench/run.sh", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", type=qty, default=qty("256Mi"), help="size of each of the 8 work items (256Mi)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 16Mi items on 32Mi volumes, small memory and sweep sets")
    p.add_argument("--runs", type=int, default=3, help="runs per figure (3)")
    p.add_argument("--block", type=qty, default=qty("1Mi"), help="block size (1Mi)")
    p.add_argument("--volume", type=qty, default=None, help="volume capacity (512Mi; 32Mi with --quick)")
    p.add_argument("--parallelism", type=int, default=None, help="spec.parallelism of the logical policies")
    p.add_argument("--mem-sizes", type=qty_list, default=None,
                   help="work item sizes for peak RSS (256Mi,1Gi,4Gi; 4Gi needs ~13 GiB free)")
    p.add_argument("--sweep", type=qty_list, default=None, help="block sizes (64Ki,256Ki,1Mi,4Mi,8Mi)")
    p.add_argument("--sweep-s3", action="store_true",
                   help="also sweep block sizes on S3 (adds ~5 min per block size at 256Mi)")
    p.add_argument("--dir", default=os.environ.get("MIMEO_BENCH_DIR", "/tmp/mimeo-bench"),
                   help="work directory on local disk (data, disk media, logs)")
    p.add_argument("--fast-dir", default=None,
                   help="directory on tmpfs for the tmpfs media, the S3 server's data, restore targets "
                        "and duplicates in the memory runs (default /dev/shm/mimeo-bench; 'none': use --dir)")
    p.add_argument("--mimeo", default=str(ROOT / "target/release/mimeo"))
    p.add_argument("--mimeo-b", default=None,
                   help="a second build to compare with --mimeo (section ab: before/after a patch)")
    p.add_argument("--only", type=lambda s: s.split(","), default=None,
                   help="comma-separated sections: dup,restore,crypt,memory,sweep,planner (and ab)")
    p.add_argument("--backends", type=lambda s: s.split(","), default=None,
                   help="comma-separated subset of disk,tmpfs,s3 (all)")
    p.add_argument("--out", default=str(ROOT / "bench"), help="where results.json goes (bench/)")
    p.add_argument("--keep", action="store_true", help="keep states and media after the run")
    a = p.parse_args()
    a.command = "bench/run.sh " + " ".join(sys.argv[1:])
    if a.quick:
        a.scale = min(a.scale, qty("16Mi"))
        a.volume = a.volume or qty("32Mi")
        a.mem_sizes = a.mem_sizes or [qty("16Mi"), qty("64Mi")]
        a.sweep = a.sweep or [qty("64Ki"), qty("1Mi"), qty("8Mi")]
    a.volume = a.volume or qty("512Mi")
    a.mem_sizes = a.mem_sizes or [qty("256Mi"), qty("1Gi"), qty("4Gi")]
    a.sweep = a.sweep or [qty(x) for x in ("64Ki", "256Ki", "1Mi", "4Mi", "8Mi")]
    if a.fast_dir is None:
        a.fast_dir = "/dev/shm/mimeo-bench" if Path("/dev/shm").is_dir() else "none"
    if a.fast_dir == "none":
        a.fast_dir = None
    elif free_bytes(a.fast_dir) < 4 * ITEMS * a.scale // 2:
        print(f"note: {a.fast_dir} has too little room; using {a.dir} for everything", file=sys.stderr)
        a.fast_dir = None
    Bench(a).run()


if __name__ == "__main__":
    main()
