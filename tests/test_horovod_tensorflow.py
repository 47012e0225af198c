"""horovod_huffcomp.tensorflow under a real 2-worker ``horovodrun`` (Gloo, CPU): eager,
tf.function, Horovod's tape and optimizers, model.fit with tf-keras and with Keras 3."""
import json

import pytest
from hvd_launch import ROOT, failure, horovodrun, require

require("horovod.tensorflow")

HVD = ROOT / "tests" / "hvd"


@pytest.fixture(scope="module")
def checks(tmp_path_factory):
    out = tmp_path_factory.mktemp("hvd_tf") / "checks.json"
    r = horovodrun(HVD / "tf_checks.py", out, env={"TF_USE_LEGACY_KERAS": "1"})
    assert r.returncode == 0, failure(r)
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def keras3(tmp_path_factory):
    out = tmp_path_factory.mktemp("hvd_k3") / "checks.json"
    r = horovodrun(HVD / "keras3_checks.py", out)
    assert r.returncode == 0, failure(r)
    return json.loads(out.read_text())


def test_eager_allreduce_is_exact_mean_of_dequantized(checks):
    assert checks["eager_exact"] and checks["eager_shape"] == [33, 7]


def test_horovod_tape_names_collectives_after_variables_and_is_exact(checks):
    assert checks["tape_names"] == ["dense/bias", "dense/kernel", "dense_1/bias",
                                    "dense_1/kernel"]
    assert checks["tape_exact"]
    assert checks["grouped_tape_exact"]  # num_groups=1: Horovod's grouped allreduce path
    s = checks["tape_stats"]
    assert s["tensors"] == 4 and 0 < s["bytes_sent"] < s["raw_bytes"] / 4


def test_tf_function_weights_identical_after_50_steps(checks):
    assert checks["identical_50"] and checks["identical_50_ef"] and checks["identical_50_topk"]
    assert checks["identical_50_fp4"] and checks["identical_50_bucket"]


def test_error_feedback_residual(checks):
    assert checks["ef_residual_right"]


def test_horovod_distributed_optimizer(checks):
    assert checks["optimizer_identical"]
    assert checks["optimizer_tensors"] == 5 * 4  # 5 steps x 4 variables, all encoded


def test_warmup_switch_uses_plain_allreduce_then_encodes(checks):
    assert checks["warmup_off_is_plain"] and checks["warmup_on_encoded"]


def test_sparse_gradients(checks):
    # ours: IndexedSlices stay sparse, values encoded, rows of both workers, exact
    assert checks["sparse_is_slices"] and checks["sparse_exact"] and checks["sparse_indices"]
    assert checks["sparse_dense_exact"] and checks["sparse_ours_identical"]
    # Horovod's tape with sparse_as_dense=True: densified, then compressed (20 steps x 3)
    assert checks["sparse_as_dense_identical"] and checks["sparse_as_dense_tensors"] == 60


def test_model_fit_with_our_callbacks(checks):
    logs = checks["fit_logs"]
    assert checks["fit_identical"]
    # 10 steps per epoch, the first 3 with compression off (ratio 1), the rest encoded
    assert 1.0 < logs["compression_ratio"][0] < logs["compression_ratio"][1]
    assert logs["bytes_sent"][0] > logs["bytes_sent"][1] > 0
    assert logs["encode_ms"][1] > 0 and logs["decode_ms"][1] > 0


def test_corrupted_payload_is_a_clear_error_everywhere(checks):
    for errors in (checks["corrupt_errors_all_ranks"], checks["corrupt_errors_graph_all_ranks"]):
        assert len(errors) == 2
        for err in errors:
            assert err is not None and "PayloadError: payload from rank 1" in err
            assert "checksum" in err


def test_keras3_path(keras3):
    assert keras3["keras"].startswith("3.")
    assert keras3["identical"]  # different initial weights per rank: the broadcast fixed them
    assert keras3["optimizer_class"] == "Adam"
    assert "sequential/embedding/embeddings" in keras3["names"]  # sparse gradient encoded
    logs = keras3["fit_logs"]
    assert all(r > 4 for r in logs["compression_ratio"])
    assert logs["loss"][1] < logs["loss"][0]


@pytest.mark.parametrize("keras", ["2", "3"])
def test_example_accuracy_matches_uncompressed(tmp_path, keras):
    results = {}
    for mode in ("none", "huffman"):
        out = tmp_path / f"{mode}.json"
        r = horovodrun(ROOT / "examples" / "train_keras_digits.py", "--keras", keras,
                       "--compression", mode, "--json", out)
        assert r.returncode == 0, failure(r)
        results[mode] = json.loads(out.read_text())
    base, comp = results["none"], results["huffman"]
    assert base["parameters_identical_on_all_ranks"]
    assert comp["parameters_identical_on_all_ranks"]
    assert comp["accuracy"] >= base["accuracy"] - 0.005, (base, comp)
    assert comp["bytes_sent_per_step"] < base["float32_bytes_per_step"] / 4
