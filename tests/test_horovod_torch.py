"""horovod_huffcomp.torch under a real 2-worker ``horovodrun`` (Gloo, CPU)."""
import json

import pytest
from hvd_launch import ROOT, failure, horovodrun, require

require("horovod.torch")


@pytest.fixture(scope="module")
def checks(tmp_path_factory):
    out = tmp_path_factory.mktemp("hvd") / "checks.json"
    r = horovodrun(ROOT / "tests" / "hvd" / "torch_checks.py", out)
    assert r.returncode == 0, failure(r)
    return json.loads(out.read_text())


def test_average_is_exact_mean_of_dequantized(checks):
    assert checks["exact_mean"] and checks["exact_mean_fp4"] and checks["exact_mean_bucket"]


def test_parameters_identical_after_50_steps(checks):
    assert checks["identical_50"] and checks["identical_50_ef"] and checks["identical_50_topk"]
    assert checks["identical_50_fp4"] and checks["identical_50_bucket"]


def test_corrupted_payload_is_a_clear_error_everywhere(checks):
    for err in checks["corrupt_errors_all_ranks"]:
        assert err is not None and "rank 1" in err and "checksum" in err


def test_encoded_bytes_really_cross_the_wire(checks):
    s = checks["stats"]
    assert s["tensors"] == 3 * 4  # 3 steps x 4 parameters
    assert 0 < s["bytes_sent"] < s["raw_bytes"] / 5
    assert s["bytes_received"] > 0 and s["encode_s"] > 0 and s["decode_s"] > 0


def test_example_accuracy_matches_uncompressed(tmp_path):
    results = {}
    runs = {"none": ["--compression", "none"], "huffman": ["--compression", "huffman"],
            # CO3's fp4 with its GenNorm scale and error feedback (decay 0.7)
            "fp4": ["--quantizer", "fp4", "--error-feedback", "--gamma", "0.7"],
            # QSGD's L2 norm at s = 16 in buckets of 512 (one scale per layer: 96.39% here)
            "bucket": ["--norm", "l2", "--levels", "16", "--bucket", "512"]}
    for mode, args in runs.items():
        out = tmp_path / f"{mode}.json"
        r = horovodrun(ROOT / "examples" / "train_torch_digits.py", *args, "--json", out)
        assert r.returncode == 0, failure(r)
        results[mode] = json.loads(out.read_text())
    base = results["none"]
    for mode in ("huffman", "fp4", "bucket"):
        comp = results[mode]
        assert comp["parameters_identical_on_all_ranks"]
        assert comp["accuracy"] >= base["accuracy"] - 0.005, (mode, base, comp)
        assert comp["bytes_sent_per_step"] < base["float32_bytes_per_step"] / 4


def test_grouped_optimizer(checks):
    assert checks["grouped_is_sgd"]  # same class name as the wrapped optimizer, as Horovod's
    assert checks["grouped_exact_mean"]  # unused parameter included: zeros
    s = checks["grouped_stats"]
    assert s["tensors"] == 3 * 6  # 3 steps x 6 parameters in 2 groups
    assert 0 < s["bytes_sent"] < s["raw_bytes"] / 5
    assert checks["grouped_identical_50"] and checks["grouped_identical_50_ef_2passes"]
    for err in checks["grouped_corrupt_errors_all_ranks"]:
        assert err is not None and "rank 1" in err and "checksum" in err


def test_reduce_scatter_exchange(checks):
    # exact integer sum on the shared grid, per-parameter compressor and grouped optimizer
    assert checks["rs_exact"] and checks["rs_grouped_exact"]
    for key, tensors in (("rs_stats", 3 * 4), ("rs_grouped_stats", 3 * 6)):
        s = checks[key]
        assert s["tensors"] == tensors
        assert 0 < s["bytes_sent"] < s["raw_bytes"] / 4 and s["bytes_received"] > 0
    assert checks["rs_identical_50"] and checks["rs_grouped_identical_50_ef"]
    for key in ("rs_corrupt_errors_all_ranks", "rs_grouped_corrupt_errors_all_ranks"):
        for err in checks[key]:
            assert err is not None and "rank 1" in err and "checksum" in err, err
