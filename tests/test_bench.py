"""`rbl bench` and the pass counting behind its figures; no timing is asserted (that is for tests/benchmarks)."""

import json
import time

import pytest
import torch

from robustbench_lite import bench, bench_tuning
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


# --- interleaved rounds ----------------------------------------------------------------------------------------------


def test_a_ratio_is_the_median_of_per_round_ratios_with_its_interquartile_spread():
    # Round 3 had a load spike on ours only: its ratio (4) neither moves the median nor the spread.
    ratio = bench.Ratio.of([1.0, 1.1, 4.0, 1.0, 0.9], [1.0, 1.0, 1.0, 1.0, 1.0])
    assert ratio.median == pytest.approx(1.0) and ratio.spread == pytest.approx(0.05)
    assert ratio.text(0.1) == "1.00 ±5%" and ratio.steady(0.1)
    # A machine so busy that the rounds disagree: the ratio is not printed, only its spread.
    noisy = bench.Ratio.of([1.0, 1.5, 0.7, 1.3, 0.8], [1.0] * 5)
    assert not noisy.steady(0.1) and noisy.text(0.1) == "unsteady ±25%"
    assert bench.Ratio.of([1.0, 2.0], [1.0, 1.0]).text(0.1) == "1.50 ±?"  # two rounds cannot show a spread
    assert bench.Ratio.of([1.0, 1.0, 1.0], [1.0, 0.0, 1.0]) is None


def test_contenders_are_warmed_up_then_timed_in_turn_every_round(cnn_workload):
    calls = []
    ours, *others = (bench.Contender(name, lambda name=name: calls.append(name)) for name in ("ours", "a", "b"))
    bench.interleaved(ours, others, cnn_workload, rounds=3, seed=0)
    # A warm-up call of each, then rounds whose order alternates: neither side always goes first.
    assert calls == ["a", "b", "ours"] + ["a", "b", "ours"] + ["ours", "a", "b"] + ["a", "b", "ours"]
    assert [len(contender.wall) for contender in (ours, *others)] == [3, 3, 3]  # the warm-up is not timed
    assert ours.calls == 4
    calls.clear()
    bench.interleaved(ours, others, cnn_workload, rounds=2, seed=0)  # ends on an odd round: its others last
    assert calls == ["a", "b", "ours", "ours", "a", "b"] and len(ours.wall) == 5 == len(others[0].wall)


def test_the_unsteady_ratio_is_refused_in_the_table(cnn_workload):
    measurement = bench.measure("fgsm", cnn_workload, repeats=3, torchattacks=False)
    measurement.bound_ratio, measurement.bound_ratio_spread = 1.0, 0.3
    row = next(line for line in bench.format_table([measurement]).splitlines() if line.startswith("| fgsm"))
    assert "unsteady ±30%" in row and "1.00" not in row
    assert "1.00 ±30%" in bench.format_table([measurement], max_spread=0.5)


class Slowed:
    """Calls ``call`` and then sleeps ``seconds``: a contender made slower by a known amount."""

    def __init__(self, call, seconds):
        self.call, self.seconds = call, seconds

    def __call__(self, *args, **kwargs):
        result = self.call(*args, **kwargs)
        time.sleep(self.seconds)
        return result


def test_a_slowed_contender_moves_its_ratio_the_right_way(cnn_workload):
    """Our attack slowed: ours/bound rises; torchattacks' counterpart slowed: ours/torchattacks falls."""
    pytest.importorskip("torchattacks")
    import robustbench_lite as rbl

    plain = bench.measure("pgd[steps=2]", cnn_workload, repeats=3)
    attack = rbl.get_attack("pgd[steps=2]")
    attack.perturb = Slowed(attack.perturb, 10 * plain.seconds)
    slowed = bench.measure(attack, cnn_workload, repeats=3)
    assert slowed.bound_ratio > 5 * plain.bound_ratio and slowed.torchattacks_ratio > 5 * plain.torchattacks_ratio
    attack = rbl.get_attack("pgd[steps=2]")
    reference = attack.reference
    attack.reference = lambda *args: Slowed(reference(*args), 10 * plain.seconds)
    theirs_slowed = bench.measure(attack, cnn_workload, repeats=3)
    assert theirs_slowed.torchattacks_ratio < plain.torchattacks_ratio / 5
    assert 0.2 < theirs_slowed.bound_ratio / plain.bound_ratio < 5  # ours and the bound untouched


def test_the_bound_charges_a_jacobian_one_graph_forward_for_its_backward_passes(cnn_workload):
    deepfool = bench.measure("deepfool[steps=1]", cnn_workload, repeats=1, torchattacks=False)
    assert (deepfool.graph_forward_passes, deepfool.gradient_evaluations) == (1.0, 10.0)
    pgd = bench.measure("pgd[steps=3]", cnn_workload, repeats=1, torchattacks=False)
    assert pgd.graph_forward_passes == pgd.gradient_evaluations == 3.0
    assert deepfool.bound_seconds == pytest.approx(
        (deepfool.forward_passes - 1) * deepfool.forward_seconds + deepfool.graph_forward_seconds
        + 10 * max(deepfool.forward_backward_seconds - deepfool.graph_forward_seconds, 0.0))


def test_rbl_bench_defaults_are_the_library_defaults():
    from robustbench_lite.cli import bench_command

    defaults = {parameter.name: parameter.default for parameter in bench_command.params}
    assert (defaults["repeats"], defaults["max_spread"]) == (bench.ROUNDS, bench.MAX_SPREAD)


# --- rbl bench --tune --------------------------------------------------------------------------------------------------


def test_tune_times_every_batch_size_and_layout_and_marks_the_fastest_with_identical_predictions():
    tunings = bench_tuning.tune("cnn,mlp@2", batch_sizes=(8, 16), device="cpu", repeats=3)
    cnn = [(t.batch_size, t.channels_last) for t in tunings if t.model == "cnn@1x28x28"]
    mlp = [(t.batch_size, t.channels_last) for t in tunings if t.model == "mlp@2"]
    assert sorted(cnn) == [(8, False), (8, True), (16, False), (16, True)]
    assert sorted(mlp) == [(8, False), (16, False)]  # no memory order to choose for feature vectors
    for model in ("cnn@1x28x28", "mlp@2"):
        fastest = [t for t in tunings if t.model == model and t.fastest]
        assert len(fastest) == 1 and fastest[0].identical
        assert fastest[0].seconds_per_image == min(t.seconds_per_image for t in tunings if t.model == model and t.identical)
    assert all(len(t.round_seconds) == 3 and t.seconds_per_image > 0 for t in tunings)


def test_a_setting_that_changes_predictions_is_never_recommended(monkeypatch):
    real = bench_tuning._predictions_in_batches

    def flipped_when_channels_last(workload, size):
        predictions = real(workload, size)
        return predictions + 1 if workload.acceleration.get("channels_last") else predictions

    monkeypatch.setattr(bench_tuning, "_predictions_in_batches", flipped_when_channels_last)
    tunings = bench_tuning.tune("cnn", batch_sizes=(8,), device="cpu", repeats=3)
    assert [(t.channels_last, t.identical, t.fastest) for t in sorted(tunings, key=lambda t: t.channels_last)] == [
        (False, True, True), (True, False, False)]
    table = bench_tuning.format_tuning(tunings)
    assert "| NO " in table and table.splitlines()[-1] == "cnn@1x28x28: rbl run ... --eval-batch-size 8"


def test_rbl_bench_tune_prints_the_flags_for_rbl_run(capsys, tmp_path):
    path = tmp_path / "tune.json"
    status = main(["bench", "--tune", "--models", "cnn", "--batch-size", "8,16", "--repeats", "3", "--device", "cpu",
                   "--json", str(path)])
    out = capsys.readouterr().out
    assert status == 0 and "cnn@1x28x28: rbl run ... --eval-batch-size " in out
    tunings = json.loads(path.read_text())["tunings"]
    assert len(tunings) == 4 and sum(t["fastest"] for t in tunings) == 1


# --- rbl bench --training ----------------------------------------------------------------------------------------------


def test_a_training_step_is_counted_as_k_input_gradients_and_one_update():
    from robustbench_lite import bench_training

    pgd = bench_training.measure_training("at-pgd[steps=3]", "cnn", batch_size=8, device="cpu", repeats=3)
    assert (pgd.input_gradients, pgd.graph_forward_passes, pgd.training_forward_passes) == (3.0, 3.0, 1.0)
    assert pgd.forward_passes == 4.0
    # TRADES: a clean prediction to start from, k gradients, and an update through two train-mode passes (x, x_adv)
    trades = bench_training.measure_training("trades[steps=2]", "cnn", batch_size=8, device="cpu", repeats=3)
    assert (trades.forward_passes, trades.input_gradients, trades.training_forward_passes) == (5.0, 2.0, 2.0)
    assert trades.round_seconds["update"] and len(trades.round_seconds["update"]) == 3
    standard = bench_training.measure_training("none", "cnn", batch_size=8, device="cpu", repeats=3)
    assert (standard.input_gradients, standard.forward_passes) == (0.0, 1.0)
    assert 0 < standard.bound_seconds < pgd.bound_seconds and pgd.bound_ratio > 0


def test_a_slowed_training_step_moves_its_ratio_up():
    import robustbench_lite as rbl
    from robustbench_lite import bench_training

    plain = bench_training.measure_training("at-pgd[steps=2]", "cnn", batch_size=8, device="cpu", repeats=3)
    defense = rbl.default_registry().create("defenses", "at-pgd[steps=2]")
    defense.loss = Slowed(defense.loss, 10 * plain.seconds)
    slowed = bench_training.measure_training(defense, "cnn", batch_size=8, device="cpu", repeats=3)
    assert slowed.bound_ratio > 5 * plain.bound_ratio


def test_rbl_bench_training_prints_the_table_and_writes_json(capsys, tmp_path):
    path = tmp_path / "training.json"
    status = main(["bench", "--training", "--defenses", "at-pgd[steps=2],none", "--models", "cnn", "--batch-size", "8",
                   "--repeats", "3", "--device", "cpu", "--json", str(path)])
    out = capsys.readouterr().out
    assert status == 0 and "| at-pgd[steps=2] | cnn@1x28x28 |" in out and "| none " in out
    assert [row["input_gradients"] for row in json.loads(path.read_text())["training"]] == [2.0, 0.0]
    assert main(["bench", "--training", "--tune", "--device", "cpu"]) == 2
    assert capsys.readouterr().err.strip() == "rbl: error: --tune and --training are two measurements; give one"


@pytest.mark.parametrize("args, message", [
    (["--tune", "--precision", "bf16"], "--precision does not apply to --tune"),
    (["--tune", "--attacks", "pgd"], "--attacks does not apply to --tune"),
    (["--training", "--no-torchattacks"], "--no-torchattacks does not apply to --training"),
    (["--training", "--channels-last"], "--channels-last does not apply to --training"),
    (["--defenses", "at-pgd"], "--defenses does not apply to an attack benchmark"),
])
def test_an_option_the_measurement_would_ignore_is_refused(capsys, args, message):
    assert main(["bench", *args, "--device", "cpu"]) == 2
    assert capsys.readouterr().err.strip() == f"rbl: error: {message}"


def test_rbl_bench_training_defaults_are_the_library_defaults():
    from robustbench_lite import bench_training
    from robustbench_lite.cli import bench_command

    defaults = {parameter.name: parameter.default for parameter in bench_command.params}
    assert defaults["defenses"] == bench_training.TRAINING_DEFENSES
