#!/usr/bin/env python3
"""Operator at scale, on the e2e control plane: N CatalogEntries and P DuplicationPolicies in one
namespace, the operator (release build, out of cluster, with its own ServiceAccount) started
against them; prints and records how long it takes to become ready and to settle, then its CPU,
memory and API request rate at rest. The entries are created in stages (--stages): at each
stage but the last the operator is started, measured until it settles, and stopped, so the
memory per 10,000 entries is the slope of its settled RSS between the stages.

    python3 bench/operator_scale.py [--entries 200000] [--policies 2000] [--stages 50000] [--rest 120]

Needs e2e/bin (bash e2e/tools.sh) and target/release/mimeo (cargo build --release). API
requests are counted from the API server's audit log (level Metadata, the operator's user
only), so nothing else on the control plane is counted. Writes bench/results-operator.json;
bench/report.py adds it to results.md.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BIN = ROOT / "e2e" / "bin"
NS = "scale"
SA = "mimeo-bench"
USER = f"system:serviceaccount:{NS}:{SA}"


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def kubectl(*args, data=None, check=True):
    p = subprocess.run([str(BIN / "kubectl"), *args], input=data, capture_output=True, text=True)
    if check and p.returncode != 0:
        sys.exit(f"kubectl {' '.join(args[:3])}: {p.stderr.strip()}")
    return p.stdout


def free_port():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def audit_lines(path):
    try:
        with open(path, "rb") as f:
            return sum(1 for _ in f)
    except FileNotFoundError:
        return 0


def resources(entries, policies):
    """The namespace's objects as lists of at most 1000 items: the classes and trails, the
    policies, then the entries."""
    head = [
        {"apiVersion": "mimeo.dev/v1alpha1", "kind": "MediaClass", "metadata": {"name": "tapes"},
         "spec": {"backend": {"filesystem": {"path": "/nonexistent"}}, "volumeCapacity": "512Mi"}},
        {"apiVersion": "mimeo.dev/v1alpha1", "kind": "BackupTrail", "metadata": {"name": "nightly"},
         "spec": {"mediaClassName": "tapes", "retention": "7y"}},
        {"apiVersion": "mimeo.dev/v1alpha1", "kind": "DuplicationTrail", "metadata": {"name": "vault"},
         "spec": {"mediaClassName": "tapes", "retention": "7y"}},
    ]
    yield head
    batch = []
    for p in range(policies):
        batch.append({
            "apiVersion": "mimeo.dev/v1alpha1", "kind": "DuplicationPolicy",
            "metadata": {"name": f"policy-{p:04d}"},
            "spec": {"sourceTrails": ["nightly"], "targets": ["vault"],
                     "selection": {"workItems": [f"app-{p % 1000:04d}"]}},
        })
        if len(batch) == 1000:
            yield batch
            batch = []
    if batch:
        yield batch
    items = entries // 2  # each instance: an original on nightly and its copy on vault
    batch = []
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    t0 = start.strftime("%Y-%m-%dT%H:%M:%SZ")
    # What the trails' retention (7y: 7 x 365 days) gives: an entry whose date differed would be
    # corrected by the operator, one patch per entry, and never settle as a real catalog does.
    expires = (start + timedelta(days=7 * 365)).strftime("%Y-%m-%dT%H:%M:%SZ")
    for i in range(items):
        wi = f"app-{i % 1000:04d}"
        inst = f"{wi}-{i // 1000:05d}"
        for trail, role in (("nightly", "Original"), ("vault", "Duplicate")):
            batch.append({
                "apiVersion": "mimeo.dev/v1alpha1", "kind": "CatalogEntry",
                "metadata": {"name": f"{trail}.{inst}", "labels": {
                    "mimeo.dev/work-item": wi, "mimeo.dev/trail": trail,
                    "mimeo.dev/role": role, "mimeo.dev/instance": inst}},
                "spec": {"workItem": wi, "instanceId": inst, "backupTime": t0,
                         "backupTrail": "nightly", "trail": trail, "role": role,
                         "extents": [{"volume": f"{trail}-{i // 400:05d}", "segment": 0,
                                      "offset": (i % 400) * 1310720, "length": 1310720}],
                         "bytes": 1048576, "digest": "sha256:" + "0" * 64,
                         "createdAt": t0, "expiresAt": expires},
            })
            if len(batch) == 1000:
                yield batch
                batch = []
    if batch:
        yield batch


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=200000)
    ap.add_argument("--policies", type=int, default=2000)
    ap.add_argument("--stages", type=lambda v: [int(x) for x in v.split(",") if x], default=[50000],
                    help="entry counts at which the operator is also measured (comma-separated)")
    ap.add_argument("--rest", type=int, default=120, help="seconds measured at rest")
    ap.add_argument("--mimeo", default=str(ROOT / "target" / "release" / "mimeo"))
    ap.add_argument("--out", default=str(HERE / "results-operator.json"))
    a = ap.parse_args()
    for tool in ("mimeo-controlplane", "kubectl"):
        if not (BIN / tool).exists():
            sys.exit(f"{BIN / tool} missing: run bash e2e/tools.sh")
    work = Path(tempfile.mkdtemp(prefix="mimeo-operator-scale."))
    data = work / "cp"
    data.mkdir()
    policy = work / "audit-policy.yaml"
    policy.write_text(
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n"
        f"- level: Metadata\n  users: [\"{USER}\"]\n- level: None\n")
    audit = work / "audit.log"
    procs = []

    def stop_all(*_):
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()

    signal.signal(signal.SIGTERM, lambda *_: (stop_all(), sys.exit(143)))
    try:
        cp = subprocess.Popen(
            [str(BIN / "mimeo-controlplane"), "--data-dir", str(data), "--port", "0",
             f"--apiserver-arg=--audit-policy-file={policy}",
             f"--apiserver-arg=--audit-log-path={audit}"],
            stdout=open(data / "controlplane.out", "w"), stderr=subprocess.STDOUT)
        procs.append(cp)
        while not (data / "admin.kubeconfig").exists():
            if cp.poll() is not None:
                sys.exit(f"control plane exited: see {data}")
            time.sleep(0.5)
        os.environ["KUBECONFIG"] = str(data / "admin.kubeconfig")
        kubectl("apply", "--server-side", "-f", str(ROOT / "crds" / "crds.yaml"))
        kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
        kubectl("create", "namespace", NS)
        kubectl("-n", NS, "create", "serviceaccount", SA)
        # The chart's operator rules, as a ClusterRole bound to the bench's ServiceAccount.
        rendered = subprocess.run(
            [str(BIN / "helm"), "template", "mimeo", str(ROOT / "charts" / "mimeo")],
            capture_output=True, text=True, check=True).stdout
        kubectl("apply", "-f", "-", data=rendered_cluster_role(rendered))
        kubectl("create", "clusterrolebinding", SA, "--clusterrole=mimeo-operator",
                f"--serviceaccount={NS}:{SA}")
        # Its Lease, as the chart's leader-election Role allows in the release namespace.
        kubectl("-n", NS, "create", "role", "lease", "--verb=create,get,update",
                "--resource=leases.coordination.k8s.io")
        kubectl("-n", NS, "create", "rolebinding", "lease", "--role=lease",
                f"--serviceaccount={NS}:{SA}")
        token = kubectl("-n", NS, "create", "token", SA, "--duration=4h").strip()
        server = kubectl("config", "view", "--minify", "-o", "jsonpath={.clusters[0].cluster.server}")
        kc = work / "operator.kubeconfig"
        ca = data / "pki" / "ca.crt"
        kc.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "op",
            "clusters": [{"name": "c", "cluster": {"server": server, "certificate-authority": str(ca)}}],
            "users": [{"name": SA, "user": {"token": token}}],
            "contexts": [{"name": "op", "context": {"cluster": "c", "user": SA, "namespace": NS}}],
        }))

        created_s = 0.0
        n = 0
        entries_made = 0
        batches = resources(a.entries, a.policies)
        stages = sorted({x for x in a.stages if 0 < x < a.entries}) + [a.entries]
        port = free_port()
        env = dict(os.environ, KUBECONFIG=str(kc), MIMEO_LOG="warn")
        import urllib.request

        def ready():
            try:
                return urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2).status == 200
            except Exception:
                return False

        def start_and_settle(tag):
            """Starts the operator; returns it with its time to ready and to settled."""
            t_start = time.time()
            op = subprocess.Popen(
                [a.mimeo, "operator", f"--metrics-addr=127.0.0.1:{port}", "--worker-image=mimeo:bench",
                 f"--namespaces={NS}", f"--lease-namespace={NS}", "--lease-holder=bench"],
                env=env, stdout=open(work / f"operator-{tag}.log", "w"), stderr=subprocess.STDOUT)
            procs.append(op)
            while not ready():
                if op.poll() is not None:
                    sys.exit(f"operator exited: {(work / f'operator-{tag}.log').read_text()[-2000:]}")
                time.sleep(0.2)
            ready_s = time.time() - t_start
            log(f"operator ready in {ready_s:.1f}s, RSS {rss_mib(op.pid):.0f} MiB")
            # Settled: under 2% CPU for 10 s, with no API request but the Lease's renewals (a
            # get and an update every 5 s).
            peak_rss = 0.0
            while True:
                c0, r0 = cpu_seconds(op.pid), audit_lines(audit)
                time.sleep(10)
                peak_rss = max(peak_rss, rss_mib(op.pid))
                c1, r1 = cpu_seconds(op.pid), audit_lines(audit)
                if (c1 - c0) / 10 < 0.02 and r1 - r0 <= 4:
                    break
                if time.time() - t_start > 1800:
                    log("not settled after 30 min")
                    break
            settled_s = time.time() - t_start - 10
            log(f"settled after {settled_s:.0f}s: {cpu_seconds(op.pid):.1f} CPU s, RSS {rss_mib(op.pid):.0f} MiB")
            return op, ready_s, settled_s, peak_rss

        stage_rows = []
        for stage in stages:
            t0 = time.time()
            for batch in batches:
                kubectl("-n", NS, "apply", "--server-side", "-f", "-",
                        data=json.dumps({"apiVersion": "v1", "kind": "List", "items": batch}))
                n += len(batch)
                entries_made += sum(1 for o in batch if o["kind"] == "CatalogEntry")
                if n % 10000 < len(batch):
                    log(f"created {n} objects")
                if entries_made >= stage:
                    break
            created_s += time.time() - t0
            log(f"{n} objects ({entries_made} entries) after {created_s:.0f}s of creating")
            if stage == stages[-1]:
                break
            op, ready_s, settled_s, _ = start_and_settle(f"stage-{stage}")
            stage_rows.append({"entries": entries_made, "ready_seconds": round(ready_s, 1),
                               "settle_seconds": round(settled_s, 1), "rss_mib": round(rss_mib(op.pid), 1)})
            op.send_signal(signal.SIGTERM)
            op.wait(60)

        requests_before = audit_lines(audit)
        op, ready_s, settled_s, peak_rss = start_and_settle("final")
        cpu_settle = cpu_seconds(op.pid)
        requests_settle = audit_lines(audit) - requests_before
        c0, r0, w0 = cpu_seconds(op.pid), audit_lines(audit), time.time()
        rss = []
        while time.time() - w0 < a.rest:
            time.sleep(5)
            rss.append(rss_mib(op.pid))
        c1, r1, w1 = cpu_seconds(op.pid), audit_lines(audit), time.time()
        at_rest = {
            "seconds": round(w1 - w0, 1),
            "api_requests": r1 - r0,
            "api_requests_per_s": round((r1 - r0) / (w1 - w0), 3),
            "cpu_percent": round(100 * (c1 - c0) / (w1 - w0), 2),
            "rss_mib_max": round(max(rss), 1),
            "rss_mib_last": round(rss[-1], 1),
        }
        stage_rows.append({"entries": entries_made, "ready_seconds": round(ready_s, 1),
                           "settle_seconds": round(settled_s, 1), "rss_mib": round(rss[-1], 1)})
        per_10k = None
        if len(stage_rows) > 1:
            lo, hi = stage_rows[0], stage_rows[-1]
            per_10k = round((hi["rss_mib"] - lo["rss_mib"]) / ((hi["entries"] - lo["entries"]) / 10000), 2)
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True).stdout.strip()
        result = {
            "entries": entries_made, "policies": a.policies, "objects_created": n,
            "create_seconds": round(created_s, 1), "ready_seconds": round(ready_s, 1),
            "settle_seconds": round(settled_s, 1), "settle_cpu_seconds": round(cpu_settle, 1),
            "settle_api_requests": requests_settle, "peak_rss_mib_settling": round(peak_rss, 1),
            "stages": stage_rows, "rss_mib_per_10k_entries": per_10k,
            "at_rest": at_rest, "machine": {"nproc": os.cpu_count(),
                                            "loadavg": Path("/proc/loadavg").read_text().strip()},
            "command": "python3 bench/operator_scale.py " + " ".join(sys.argv[1:]),
            "commit": commit,
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        Path(a.out).write_text(json.dumps(result, indent=1) + "\n")
        log(f"at rest for {at_rest['seconds']}s: {at_rest['api_requests_per_s']} API requests/s, "
            f"{at_rest['cpu_percent']}% CPU, RSS {at_rest['rss_mib_max']} MiB; wrote {a.out}")
    finally:
        stop_all()
        if os.environ.get("MIMEO_BENCH_KEEP"):
            log(f"kept {work}")
        else:
            subprocess.run(["rm", "-rf", str(work)])


def rendered_cluster_role(rendered):
    """The operator's ClusterRole from `helm template` (the chart is the source of its rules)."""
    for doc in rendered.split("\n---"):
        if "kind: ClusterRole\n" in doc and "name: mimeo-operator\n" in doc:
            return doc
    sys.exit("no ClusterRole mimeo-operator in the rendered chart")


if __name__ == "__main__":
    main()
