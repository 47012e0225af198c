"""``bench train``: step time, bytes per step and accuracy of a real 2-worker training.

Runs ``examples/train_torch_digits.py`` under ``horovodrun -np 2 --gloo`` once per mode, in
one invocation: no compression, Horovod's fp16, and horovod_huffcomp configurations. Step
time is measured on this host, where the "link" is shared memory; the table adds what each
step's traffic would cost on slower links (the bytes a worker receives per step, as counted by
the compressor, or 2 (N - 1)/N of the float32/fp16 gradient for Horovod's ring allreduce, over
the bandwidth), a projection, labelled as such, not a measurement.
"""
from __future__ import annotations

import argparse
import json
import os
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
    "terngrad + EF": ["--compression", "huffman", "--quantizer", "terngrad",
                      "--error-feedback"],
    "topk 1% + EF": ["--compression", "huffman", "--quantizer", "topk", "--error-feedback"],
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


def main(argv=None):
    ap = argparse.ArgumentParser(prog="horovod-huffcomp-bench train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    a = ap.parse_args(argv)
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
