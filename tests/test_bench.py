"""`rbl bench` and the pass counting behind its figures; no timing is asserted (that is for tests/benchmarks)."""

import json

import pytest
import torch

from robustbench_lite import bench
from robustbench_lite.attack_utils import logits_and_input_jacobian, loss_gradient
from robustbench_lite.cli import main
from robustbench_lite.errors import UsageError


@pytest.fixture(scope="module")
def cnn_workload():
    return bench.make_workload("cnn", 8, "cpu")


def test_rbl_bench_prints_the_table_and_writes_json(capsys, tmp_path):
    path = tmp_path / "bench.json"
    status = main(["bench", "--attacks", "fgsm,pgd", "--models", "cnn", "--batch-size", "8", "--repeats", "1",
                   "--device", "cpu", "--json", str(path)])
    out = capsys.readouterr().out
    assert status == 0
    assert all(column in out for column in bench.COLUMNS)
    rows = [line for line in out.splitlines() if line.startswith("| fgsm") or line.startswith("| pgd")]
    assert len(rows) == 2 and all("cnn@1x28x28" in row and "|       8 |" in row for row in rows)
    payload = json.loads(path.read_text())
    assert payload["metadata"]["repeats"] == 1
    fgsm, pgd = payload["measurements"]
    assert (fgsm["attack"], fgsm["gradient_evaluations"], pgd["gradient_evaluations"]) == ("fgsm", 1.0, 10.0)
    assert fgsm["images_per_s"] > 0 and fgsm["bound_ratio"] > 0 and fgsm["device"] == "cpu"


@pytest.mark.parametrize("args, message", [
    (["--attacks", "fgsm,pgdx"], "unknown attack 'pgdx'"),
    (["--models", "cnnx"], "unknown model 'cnnx'"),
    (["--models", "cnn@1x28y"], "malformed model spec"),
    (["--batch-size", "8,zero"], "batch sizes must be positive integers"),
    (["--models", "cnn@1x99999x99999"], "model 'cnn@1x99999x99999' at batch size 128 takes batches of "
                                         "1,279,974,400,128 values, beyond the 1,073,741,824 (4 GiB of float32)"),
])
def test_bad_names_are_one_line_with_exit_status_2(capsys, args, message):
    status = main(["bench", *args, "--device", "cpu"])
    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1 and message in err


def test_gradient_evaluations_are_counted_per_full_batch(cnn_workload):
    fgsm = bench.measure("fgsm", cnn_workload, repeats=1, torchattacks=False)
    assert (fgsm.forward_passes, fgsm.gradient_evaluations) == (1.0, 1.0)
    for steps in (1, 3):
        pgd = bench.measure(f"pgd[steps={steps}]", cnn_workload, repeats=2, torchattacks=False)
        assert (pgd.forward_passes, pgd.gradient_evaluations) == (steps, steps)  # per run, over 2 runs
    assert pgd.bound_seconds > 0 and pgd.torchattacks is None


def test_torchattacks_is_counted_the_same_way(cnn_workload):
    pytest.importorskip("torchattacks")
    fgsm = bench.measure("fgsm", cnn_workload, repeats=1)
    assert fgsm.torchattacks == "FGSM"
    assert (fgsm.torchattacks_forward_passes, fgsm.torchattacks_gradient_evaluations) == (1.0, 1.0)
    pgd = bench.measure("pgd[steps=2]", cnn_workload, repeats=1)
    assert (pgd.torchattacks, pgd.torchattacks_gradient_evaluations) == ("PGD", 2.0)
    # Settings torchattacks lacks, or an attack it lacks: no comparison rather than a wrong one.
    assert bench.measure("pgd[steps=1,restarts=2]", cnn_workload, repeats=1).torchattacks is None
    assert bench.measure("hsja[iterations=1,initial_evals=2,init_trials=2]", cnn_workload, repeats=1).torchattacks is None


def test_pass_counter_counts_images_and_every_backward_pass(cnn_workload):
    counter = bench.PassCounter(cnn_workload.model)
    x, y = cnn_workload.x, cnn_workload.y
    loss_gradient(counter, x[:3], y[:3])  # a pass over a subset counts its images only
    assert (counter.forward_images, counter.backward_images) == (3, 3)
    counter.reset()
    logits_and_input_jacobian(counter, x)  # one forward, one backward per class
    assert (counter.forward_images, counter.backward_images) == (8, 8 * 10)
    counter.reset()
    with torch.no_grad():
        counter(x)
    assert (counter.forward_images, counter.backward_images) == (8, 0)


def test_model_specs_take_an_input_shape():
    spec, shape = bench.parse_model_spec("resnet18[width=2]@3x32x32")
    assert (spec.name, dict(spec.options), shape) == ("resnet18", {"width": "2"}, (3, 32, 32))
    assert bench.parse_model_spec("cnn") == (bench.parse_model_spec("cnn")[0], bench.DEFAULT_SHAPE)
    with pytest.raises(UsageError, match="malformed model spec"):
        bench.parse_model_spec("@3x32x32")


def test_autoattack_and_fab_have_their_torchattacks_counterparts_only_at_matching_settings(cnn_workload):
    pytest.importorskip("torchattacks")
    import robustbench_lite as rbl

    def counterpart(spec):
        found = bench.torchattacks_counterpart(rbl.get_attack(spec), cnn_workload.model, 0.3)
        return None if found is None else type(found).__name__

    assert (counterpart("aa"), counterpart("fab")) == ("AutoAttack", "FAB")
    assert [counterpart(spec) for spec in ("aa[version=fast]", "aa[steps=10]", "aa[targets=3]",
                                           "apgd-dlr[target_ranks=9]", "fab[target_rank=1]")] == [None] * 5
