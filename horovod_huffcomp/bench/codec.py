"""``bench codec``: bits per entry against the entropy bound and Elias, and coder speed.

For each model x quantizer x coder, on real gradients (``gradients.py``), all tensors of the
model are coded as one bundle (one header and checksum for the model, each tensor with its
own scale and codebook) and, for the default coder, also tensor by tensor. Reported:

* bits/entry of the whole payload (headers, codebooks, chunk tables, checksum included);
* H0: order-0 entropy of the quantized states, summed tensor by tensor (the stricter bound;
  pooling the whole model's states gives a larger entropy);
* ratio to H0 and to Elias-omega run-length coding of the same states (same framing);
* encode / decode speed in Melem/s of the lossless step alone (states -> bytes -> states),
  best of ``--repeat``, next to zstd level 1 on the same states as int8 bytes, measured in
  the same run: each coder's encodes alternate with as many of zstd-1's, and its ratio is
  to the best of those (a shared host's slow and fast minutes fall on both alike); zstd-1's
  own row gives its best over the whole cell.

The bar (issue #2): auto <= 1.05 x H0 where H0 >= 0.05 bit/entry, <= 1.15 x below it, and
>= 1.3x smaller than Elias-omega.
"""
from __future__ import annotations

import argparse
import platform
import time

import numpy as np

from .. import payload
from ..cpu_backend import code_section, code_sections, decode_states
from ..entropy import entropy_bits
from ..quantizers import arena_for, quantize
from .gradients import MODELS, model_gradients

QUANTIZERS = (
    [("qsgd", s, "l2") for s in (1, 4, 16, 64)]
    + [("qsgd", s, "max") for s in (2, 8, 32, 127)]
    + [("terngrad", 1, "max")]
)
# CO3's low-bit floats (``--quantizers float``): not in the issue's bar, reported alike
FLOAT_QUANTIZERS = [("fp4", 5, "gennorm"), ("fp4", 5, "max"), ("fp8", 119, "max"),
                    ("fp8-e5m2", 123, "max")]
QUANTIZER_SETS = {"issue": QUANTIZERS, "float": FLOAT_QUANTIZERS,
                  "all": QUANTIZERS + FLOAT_QUANTIZERS}
CODERS = ("auto", "huffman", "sh", "shs", "rlh", "zrh", "elias-gamma", "elias-delta",
          "elias-omega")


def qname(q, s, norm):
    if q in payload.FP_FORMATS:
        return f"{q} {norm}"
    return "terngrad" if q == "terngrad" else f"qsgd-{norm} s={s}"


def bar_for(h_per_entry: float) -> float:
    return 1.05 if h_per_entry >= 0.05 else 1.15


def _sections(qn, qs, coder, shapes, dtypes):
    """The lossless step for a model: quantized states -> bundle sections (as
    ``encode_many`` codes them)."""
    return code_sections(qs, qn, dtypes, shapes, coder, None, 0)


def _best_time(fn, repeat):
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _best_times(fns, repeat):
    """The best time of each function, timed in turn ``repeat`` times (interleaved, so a
    shared host's slow and fast minutes fall on all of them alike)."""
    best = [float("inf")] * len(fns)
    for _ in range(repeat):
        for k, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - t0)
    return best


def run(models=MODELS, coder_list=CODERS, steps=20, repeat=3, progress=True,
        quantizers=QUANTIZERS):
    import zstandard

    rows = []
    cells = [(m, qc) for m in models for qc in quantizers]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(cells) * len(coder_list), desc="bench codec", unit="cell")
    cache = {}
    for m, (qn, s, norm) in cells:
        if m not in cache:
            cache[m] = model_gradients(m, steps=steps)
        grads = cache[m]
        flats = [g.reshape(-1) for _, g in grads]
        arena, at = arena_for(f.size for f in flats)  # one states buffer, as encode_many
        qs = [quantize(f, qn, s, norm, 0, i, arena=(arena, at[i])) for i, f in enumerate(flats)]
        shapes = [g.shape for _, g in grads]
        dtypes = [g.dtype for _, g in grads]
        n = sum(q.n for q in qs)
        h = sum(entropy_bits(q.states[: q.n]) for q in qs)
        states8 = np.concatenate([q.states[: q.n] for q in qs]).tobytes()
        zc = zstandard.ZstdCompressor(level=1)
        zd = zstandard.ZstdDecompressor()
        zblob = zc.compress(states8)
        z_enc = _best_time(lambda: zc.compress(states8), repeat)
        z_dec = _best_time(lambda: zd.decompress(zblob), repeat)
        base = dict(model=m, quantizer=qname(qn, s, norm), n=n, H=h / n,
                    zstd_enc=n / z_enc / 1e6)
        zrow = dict(base, coder="zstd-1 (int8)", bits=8 * len(zblob) / n, enc=n / z_enc / 1e6,
                    dec=n / z_dec / 1e6)
        rows.append(zrow)
        omega_bits = None
        for coder in coder_list:
            secs = _sections(qn, qs, coder, shapes, dtypes)
            blob = payload.pack(secs, bundle=True)
            # timed in turn with zstd-1, the same number of times: the ratio is to that zstd
            t_enc, z_pair = _best_times([lambda: _sections(qn, qs, coder, shapes, dtypes),
                                         lambda: zc.compress(states8)], repeat)
            z_enc = min(z_enc, z_pair)
            _, parsed = payload.unpack(blob)
            t_dec = _best_time(lambda: [decode_states(p) for p in parsed], repeat)
            for p, q in zip(parsed, qs):  # the benchmark doubles as a round-trip check
                if not np.array_equal(decode_states(p)[0], q.states[: q.n]):
                    raise AssertionError(f"{coder} round trip failed on {m} {qn}")
            row = dict(base, coder=coder, bits=8 * len(blob) / n, enc=n / t_enc / 1e6,
                       dec=n / t_dec / 1e6, zstd_enc=n / z_pair / 1e6)
            if coder == "auto":
                alone = [code_section(q, qn, dt, sh, coder, None, 0)
                         for q, sh, dt in zip(qs, shapes, dtypes)]
                per = sum(len(payload.pack([sec], bundle=False)) for sec in alone)
                row["per_tensor_bits"] = 8 * per / n
            if coder == "elias-omega":
                omega_bits = row["bits"]
            rows.append(row)
            if bar:
                bar.update(1)
        zrow["enc"] = zrow["zstd_enc"] = n / z_enc / 1e6  # its best in the whole cell
        for r in rows:
            if r["model"] == m and r["quantizer"] == base["quantizer"]:
                r["ratio_H"] = r["bits"] / base["H"] if base["H"] > 0 else float("nan")
                r["omega_over"] = omega_bits / r["bits"] if omega_bits else float("nan")
    if bar:
        bar.close()
    return rows


def markdown(rows) -> str:
    lines = [
        "| model | quantizer | H0 b/e | coder | bits/entry | / H0 | Elias-ω / this | "
        "enc Melem/s | dec Melem/s | enc / zstd-1 | bar |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        verdict = ""
        if r["coder"] == "auto":
            ok_h = r["ratio_H"] <= bar_for(r["H"])
            ok_o = not r["omega_over"] < 1.3  # NaN (Elias not run) is no failure
            verdict = ("pass" if ok_h and ok_o else
                       "FAIL " + ("H0 " if not ok_h else "") + ("Elias" if not ok_o else ""))
            verdict += f" (per tensor {r['per_tensor_bits'] / r['H']:.3f}×H0)"
        lines.append(
            f"| {r['model']} | {r['quantizer']} | {r['H']:.4f} | {r['coder']} | "
            f"{r['bits']:.4f} | {r['ratio_H']:.3f} | {r['omega_over']:.2f} | {r['enc']:.0f} | "
            f"{r['dec']:.0f} | {r['enc'] / r['zstd_enc']:.2f} | {verdict} |"
        )
    return "\n".join(lines)


def plot(rows, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    coders_seen = []
    for r in rows:
        if r["coder"] not in coders_seen:
            coders_seen.append(r["coder"])
    for c in coders_seen:
        pts = [(r["H"], r["bits"]) for r in rows if r["coder"] == c]
        ax.scatter(*zip(*pts), label=c, s=14)
    lim = [1e-3, 16]
    ax.plot(lim, lim, "k--", lw=1, label="entropy H0")
    ax.plot(lim, [1.15 * v for v in lim], "k:", lw=1, label="1.15 × H0")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("order-0 entropy of the states (bits/entry)")
    ax.set_ylabel("payload bits/entry (all overhead included)")
    ax.set_title("horovod_huffcomp: real gradients, digits")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="horovod-huffcomp-bench codec", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    ap.add_argument("--coders", nargs="+", default=list(CODERS), choices=CODERS)
    ap.add_argument("--quantizers", choices=sorted(QUANTIZER_SETS), default="issue",
                    help="issue: QSGD and TernGrad cells of issue #2's bar; float: CO3's "
                         "fp4 / fp8 formats; all: both")
    ap.add_argument("--steps", type=int, default=20, help="training steps before the gradient")
    ap.add_argument("--repeat", type=int, default=3, help="timing repetitions (best is kept)")
    ap.add_argument("--plot", default="bench_codec.png", help="PNG path ('' for none)")
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    rows = run(a.models, a.coders, a.steps, a.repeat, progress=not a.no_progress,
               quantizers=QUANTIZER_SETS[a.quantizers])
    print(f"\nmachine: {platform.processor() or platform.machine()}, "
          f"{platform.python_implementation()} {platform.python_version()}, "
          f"date {time.strftime('%Y-%m-%d')}\n")
    print(markdown(rows))
    autos = [r for r in rows if r["coder"] == "auto"]
    print("\nWhat the default coder saves against sending float32 gradients:\n")
    print("| model | quantizer | bytes per step (float32) | bytes per step (auto) | smaller by |")
    print("|---|---|---:|---:|---:|")
    for r in autos:
        raw, sent = 4 * r["n"], r["bits"] * r["n"] / 8
        print(f"| {r['model']} | {r['quantizer']} | {raw:,.0f} | {sent:,.0f} | {raw / sent:,.0f}x |")
    fails = [r for r in autos if r["ratio_H"] > bar_for(r["H"]) or r["omega_over"] < 1.3]
    if any(np.isnan(r["omega_over"]) for r in autos):
        print("(elias-omega was not among the coders: the Elias half of the bar is unchecked)")
    print(f"\nauto meets the bar in {len(autos) - len(fails)} of {len(autos)} cells")
    if a.plot:
        plot(rows, a.plot)
        print(f"plot written to {a.plot}")
    return rows
