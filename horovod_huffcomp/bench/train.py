"""``bench train``: step time, bytes per step and accuracy of a real 2-worker training.

Runs ``examples/train_torch_digits.py`` under ``horovodrun -np 2 --gloo`` once per mode, in
one invocation: no compression, Horovod's fp16, and horovod_huffcomp configurations. Step
time is measured on this host, where the "link" is shared memory; the table adds what each
step's traffic would cost on slower links (the bytes a worker receives per step, as counted by
the compressor, or 2 (N - 1)/N of the float32/fp16 gradient for Horovod's ring allreduce, over
the bandwidth), a projection, labelled as such, not a measurement. ``--link-mbit 100 1000``
measures instead: every mode runs again with the loopback interface capped by ``tc``.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "train_torch_digits.py"
MODES = {
    "none": ["--compression", "none"],
    "fp16 (Horovod)": ["--compression", "fp16"],
    "qsgd max s=64": ["--compression", "huffman", "--quantizer", "qsgd", "--norm", "max",
                      "--levels", "64"],
    "qsgd max s=64 grouped": ["--compression", "huffman", "--quantizer", "qsgd", "--norm",
                              "max", "--levels", "64", "--grouped"],
    "qsgd max s=32 grouped reduce-scatter": ["--compression", "huffman", "--quantizer", "qsgd",
                                             "--norm", "max", "--levels", "32", "--grouped",
                                             "--mode", "reduce_scatter"],
    "qsgd l2 s=16 + EF": ["--compression", "huffman", "--quantizer", "qsgd", "--norm", "l2",
                          "--levels", "16", "--error-feedback"],
    "qsgd l2 s=16 bucket 512": ["--compression", "huffman", "--quantizer", "qsgd", "--norm",
                                "l2", "--levels", "16", "--bucket", "512"],
    "qsgd l2 s=16 bucket 512 + EF": ["--compression", "huffman", "--quantizer", "qsgd",
                                     "--norm", "l2", "--levels", "16", "--bucket", "512",
                                     "--error-feedback"],
    "terngrad + EF": ["--compression", "huffman", "--quantizer", "terngrad",
                      "--error-feedback"],
    "topk 1% + EF": ["--compression", "huffman", "--quantizer", "topk", "--error-feedback"],
    "fp4 gennorm (CO3) + EF γ=0.7": ["--compression", "huffman", "--quantizer", "fp4",
                                     "--error-feedback", "--gamma", "0.7"],
    "fp8 E4M3 + EF γ=0.7": ["--compression", "huffman", "--quantizer", "fp8",
                            "--error-feedback", "--gamma", "0.7"],
}
LINKS_GBIT = (0.1, 1.0, 10.0)


def horovodrun() -> str:
    local = Path(sys.executable).parent / "horovodrun"
    return str(local) if local.exists() else "horovodrun"


def run_mode(args, epochs: int) -> dict:
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "r.json"
        cmd = [horovodrun(), "-np", "2", "-H", "localhost:2", "--gloo", sys.executable,
               str(EXAMPLE), *args, "--epochs", str(epochs), "--json", str(out)]
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{r.stdout[-3000:]}{r.stderr[-3000:]}")
        return json.loads(out.read_text())


@contextlib.contextmanager
def shaped_loopback(mbit: float | None):
    """Cap the loopback interface at ``mbit`` Mb/s (Linux ``tc`` token bucket, root needed)
    while the block runs: the two workers' Gloo traffic then crosses a real slow link. Both
    directions share the cap (one interface); the bucket is removed whatever happens."""
    if not mbit:
        yield
        return
    if shutil.which("tc") is None:
        raise SystemExit("--link-mbit needs Linux tc (iproute2) and root")
    subprocess.run(["tc", "qdisc", "add", "dev", "lo", "root", "tbf", "rate", f"{mbit}mbit",
                    "burst", "1mb", "latency", "100ms"], check=True)  # burst > lo's 64k MTU
    try:
        yield
    finally:
        subprocess.run(["tc", "qdisc", "del", "dev", "lo", "root"], check=False)


def link_table(a, rows_by_link) -> None:
    base = {link: next((r for r in rows if r["mode"] == "none"), rows[0])
            for link, rows in rows_by_link.items()}
    print(f"\nMeasured under a shaped loopback link (tc tbf on lo, both directions sharing the "
          f"cap), 2 workers, {a.epochs} epochs, date {time.strftime('%Y-%m-%d')}\n")
    links = list(rows_by_link)
    print("| mode | test accuracy | " + " | ".join(
        f"step time at {m:g} Mb/s (ms) | vs none" for m in links) + " |")
    print("|---|---|" + "---|---|" * len(links))
    for i, r in enumerate(rows_by_link[links[0]]):
        cells = []
        for m in links:
            rr = rows_by_link[m][i]
            step = 1e3 * rr["seconds"] / rr["steps"]
            cells.append(f"{step:.1f} | {base[m]['seconds'] / rr['seconds']:.2f}x")
        print(f"| {r['mode']} | {100 * r['accuracy']:.2f}% | " + " | ".join(cells) + " |")


def main(argv=None):
    ap = argparse.ArgumentParser(prog="horovod-huffcomp-bench train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    ap.add_argument("--link-mbit", type=float, nargs="+", default=None,
                    help="also run every mode with the loopback capped at these rates (Linux "
                         "tc, root): measured step times on a slow link")
    a = ap.parse_args(argv)
    if a.link_mbit:
        rows_by_link = {}
        for mbit in a.link_mbit:
            rows_by_link[mbit] = []
            with shaped_loopback(mbit):
                for mode in a.modes:
                    r = run_mode(MODES[mode], a.epochs)
                    r["mode"] = mode
                    rows_by_link[mbit].append(r)
                    print(f"{mode} at {mbit:g} Mb/s: {1e3 * r['seconds'] / r['steps']:.1f} "
                          f"ms/step", flush=True)
        link_table(a, rows_by_link)
        return rows_by_link
    rows = []
    for mode in a.modes:
        t0 = time.perf_counter()
        r = run_mode(MODES[mode], a.epochs)
        r["mode"], r["wall_s"] = mode, time.perf_counter() - t0
        rows.append(r)
        print(f"{mode}: done in {r['wall_s']:.0f} s", flush=True)
    print(f"\n2 workers (horovodrun --gloo, one host), {a.epochs} epochs, "
          f"{rows[0]['steps']} steps, date {time.strftime('%Y-%m-%d')}\n")
    head = ("| mode | test accuracy | bytes sent / step / worker | vs float32 | "
            "bytes received / step / worker | "
            "step time here (ms) | codec ms / step | "
            + " | ".join(f"+ link time at {g:g} Gb/s (ms, projected)" for g in LINKS_GBIT) + " |")
    print(head)
    print("|" + "---|" * (7 + len(LINKS_GBIT)))
    for r in rows:
        per_step = r["bytes_sent_per_step"]
        received = r["bytes_received_per_step"]
        link = " | ".join(f"{1e3 * received * 8 / (g * 1e9):.2f}" for g in LINKS_GBIT)
        print(f"| {r['mode']} | {100 * r['accuracy']:.2f}% | {per_step:,.0f} | "
              f"{r['float32_bytes_per_step'] / per_step:.1f}x | {received:,.0f} | "
              f"{1e3 * r['seconds'] / r['steps']:.1f} | "
              f"{1e3 * r.get('codec_seconds', 0.0) / r['steps']:.1f} | {link} |")
    return rows


if __name__ == "__main__":
    main()
