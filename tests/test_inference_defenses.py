"""Inference-time defenses: the transformations, their gradients, and their naive and adaptive evaluation."""

import io

import numpy as np
import pytest
import torch
from torch import nn

import robustbench_lite as rbl
from robustbench_lite.evaluation import Preprocess, defended

TINY = "synthetic[n_train=256,n_test=96]"


def smooth_images(n, channels, size=28):
    """Images with some spatial structure, as JPEG expects (i.i.d. pixels are its worst case)."""
    return nn.functional.avg_pool2d(torch.rand(n, channels, size, size), 3, 1, 1)


# --- the transformations -------------------------------------------------------------------------

def test_declared_properties():
    expected = {"jpeg": (False, False), "bit-depth": (False, False), "gaussian-noise": (True, True),
                "median-filter": (True, False)}
    for name, (differentiable, randomized) in expected.items():
        defense = rbl.get_defense(name)
        assert defense.preprocesses and defense.training_recipe == "none"
        assert (defense.differentiable, defense.randomized) == (differentiable, randomized), name
    assert not rbl.get_defense("none").preprocesses and not rbl.get_defense("at-pgd").preprocesses


@pytest.mark.parametrize("channels", [1, 3])
def test_jpeg_is_real_jpeg(channels):
    """Bit for bit what PIL's JPEG codec (libjpeg) gives at the same quality, grayscale and RGB."""
    from PIL import Image

    x = smooth_images(3, channels)
    for quality in (75, 20):
        out = rbl.get_defense("jpeg", quality=quality).preprocess(x)
        assert out.shape == x.shape and out.dtype == x.dtype
        for image, compressed in zip(x, out):
            pixels = (image * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
            buffer = io.BytesIO()
            Image.fromarray(pixels.squeeze(2) if channels == 1 else pixels).save(buffer, "JPEG", quality=quality)
            decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())), dtype=np.float32) / 255
            expected = torch.from_numpy(decoded).reshape(image.shape[1], image.shape[2], channels).permute(2, 0, 1)
            assert torch.equal(compressed, expected)
    assert 0 < (out - x).abs().max() < 0.5  # lossy, but still the image


def test_jpeg_refuses_non_images():
    with pytest.raises(rbl.UsageError, match=r"defense 'jpeg' needs images shaped \(N, C, H, W\) with 1 or 3 "
                                             r"channels; got inputs of shape \(4, 2\)"):
        rbl.get_defense("jpeg").preprocess(torch.rand(4, 2))
    with pytest.raises(rbl.UsageError, match=r"got inputs of shape \(1, 2, 8, 8\)"):
        rbl.get_defense("jpeg").preprocess(torch.rand(1, 2, 8, 8))


def test_non_image_datasets_are_refused_before_any_training(tmp_path):
    with pytest.raises(rbl.UsageError, match=r"defense 'median-filter' needs images .* got inputs of shape \(2, 2\)"):
        rbl.run(dataset="moons", models="mlp", defenses="none,median-filter", attacks="fgsm", eps="0,0.1",
                device="cpu", cache_dir=tmp_path)
    assert not list(tmp_path.iterdir())  # nothing was trained


def test_bit_depth_quantises_any_input():
    x = torch.rand(5, 7)  # feature vectors are fine
    out = rbl.get_defense("bit-depth", bits=2).preprocess(x)
    assert set(torch.unique(out * 3).round().tolist()) <= {0.0, 1.0, 2.0, 3.0}
    assert (out - x).abs().max() <= 1 / 6 + 1e-6
    binary = rbl.get_defense("bit-depth", bits=1).preprocess(torch.tensor([0.2, 0.49, 0.51, 0.9]))
    assert binary.tolist() == [0.0, 0.0, 1.0, 1.0]


def test_gaussian_noise_is_fresh_on_every_pass():
    noise = rbl.get_defense("gaussian-noise", sigma=0.1)
    x = torch.rand(4, 1, 8, 8)
    first, second = noise.preprocess(x), noise.preprocess(x)
    assert not torch.equal(first, second) and first.min() >= 0 and first.max() <= 1
    assert (first - x).std().item() == pytest.approx(0.1, abs=0.03)
    assert torch.equal(rbl.get_defense("gaussian-noise", sigma=0.0).preprocess(x), x)


def test_median_filter_matches_scipy():
    ndimage = pytest.importorskip("scipy.ndimage")
    x = torch.rand(2, 3, 9, 11)
    for k in (3, 5):
        out = rbl.get_defense("median-filter", kernel_size=k).preprocess(x)
        expected = ndimage.median_filter(x.numpy(), size=(1, 1, k, k), mode="mirror")  # torch's "reflect"
        assert np.allclose(out.numpy(), expected)
    with pytest.raises(rbl.UsageError, match="defense 'median-filter': kernel_size must be odd, got 4"):
        rbl.get_defense("median-filter", kernel_size=4)


# --- what attacks see ------------------------------------------------------------------------------

def input_gradient(model, x):
    x = x.clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(model(x).sum(), x)
    return gradient


def test_naive_bpda_and_exact_gradients():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    x = smooth_images(2, 1, size=8)
    jpeg = rbl.get_defense("jpeg")
    naive, bpda = defended(model, jpeg, "zero"), defended(model, jpeg, "identity")
    with torch.no_grad():
        assert torch.equal(naive(x), model(jpeg.preprocess(x))) and torch.equal(bpda(x), naive(x))
    assert torch.count_nonzero(input_gradient(naive, x)) == 0  # gradient masking
    # BPDA: the model's gradient at the preprocessed input, passed straight through
    assert torch.allclose(input_gradient(bpda, x), input_gradient(model, jpeg.preprocess(x)))
    median = rbl.get_defense("median-filter")
    exact = input_gradient(defended(model, median), x)
    assert torch.count_nonzero(exact) > 0 and not torch.allclose(exact, input_gradient(model, median.preprocess(x)))
    assert defended(model, rbl.get_defense("none")) is model
    with pytest.raises(ValueError, match="unknown gradient 'straight'"):
        Preprocess(jpeg, "straight")


# --- the runner ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """A tiny version of the MNIST check: none, jpeg and gaussian-noise on one shared model."""
    root = tmp_path_factory.mktemp("inference")
    return rbl.run(models="cnn", defenses="none,jpeg,gaussian-noise", attacks="fgsm,pgd[steps=5]", eps="0,0.3",
                   dataset=TINY, epochs=2, batch_size=64, seed=0, device="cpu", eot=4,
                   cache_dir=root / "cache", out=root / "out")


def accuracy(results, defense, attack="pgd[steps=5]", eps=0.3):
    return results.set_index(["defense", "attack", "eps"]).loc[(defense, attack, eps), "accuracy"]


def test_naive_and_adaptive_rows(results):
    rows = results.drop_duplicates("defense").set_index("defense")["evaluation"].to_dict()
    assert rows == {"none": "standard", "jpeg": "naive", "jpeg+bpda": "adaptive",
                    "gaussian-noise": "naive", "gaussian-noise+eot": "adaptive"}
    assert set(results["status"]) == {"ok"}
    assert set(results["attack"]) == {"fgsm", "pgd[steps=5]", "worst-case"}  # EOT does not rename attacks
    evaluations = results.attrs["metadata"]["evaluations"]
    assert evaluations["cnn/jpeg"]["gradient"] == "zero" and evaluations["cnn/jpeg+bpda"]["gradient"] == "identity"
    assert evaluations["cnn/gaussian-noise"]["eot"] == 1 and evaluations["cnn/gaussian-noise+eot"]["eot"] == 4
    assert evaluations["cnn/gaussian-noise"]["randomized_detected"] is True
    assert evaluations["cnn/jpeg"]["randomized"] is False


def test_jpeg_looks_robust_naively_and_bpda_breaks_it(results):
    assert accuracy(results, "jpeg") == 100.0  # zero gradients: PGD never moves
    assert accuracy(results, "jpeg+bpda") <= accuracy(results, "none") + 10
    assert accuracy(results, "jpeg+bpda") < accuracy(results, "jpeg") - 50


def test_one_model_serves_every_defense(results):
    training = results.attrs["metadata"]["training"]
    assert training["cnn/jpeg"]["trained_as"] == "none" and "trained_as" not in training["cnn/none"]
    assert training["cnn/jpeg"]["epoch_losses"] == training["cnn/none"]["epoch_losses"]
    clean = results[results["eps"] == 0].groupby("defense")["accuracy"].first()
    assert clean["jpeg"] == clean["jpeg+bpda"]


def test_flags_in_the_leaderboard(results):
    ranks = rbl.ranking(results).set_index("defense")["flags"].to_dict()
    assert ranks == {"none": "", "jpeg": "above-chance-at-large-eps", "jpeg+bpda": "",
                     "gaussian-noise": "random-without-eot", "gaussian-noise+eot": ""}
    markdown = results.attrs["files"]["md"].read_text()
    assert "## Naive and adaptive evaluations" in markdown
    assert "- cnn / jpeg+bpda: **adaptive** (BPDA)" in markdown
    assert "- cnn / gaussian-noise+eot: **adaptive** (exact gradient, EOT 4, randomized model)" in markdown
    assert "- cnn / jpeg: `above-chance-at-large-eps`: the strongest l-inf attack" in markdown


def test_inference_defense_reuses_the_cached_none_weights(tmp_path):
    settings = dict(models="cnn", attacks="fgsm", eps="0", dataset=TINY, epochs=1, batch_size=64, device="cpu",
                    cache_dir=tmp_path)
    rbl.run(defenses="none", **settings)
    again = rbl.run(defenses="bit-depth", **settings)
    assert again.attrs["metadata"]["training"]["cnn/bit-depth"]["from_cache"] is True
    assert len(list(tmp_path.glob("*.pt"))) == 1
    model, _ = rbl.trained_model(model="cnn", defense="bit-depth", dataset=TINY, epochs=1, batch_size=64,
                                 device="cpu", cache_dir=tmp_path)
    assert isinstance(model[0], Preprocess) and model[0].gradient == "zero"


SNEAKY = '''
import torch
import torch.nn.functional as F
from robustbench_lite import Defense, hookimpl

class Sneaky(Defense):
    name = "sneaky"
    description = "random, without saying so"

    def loss(self, model, x, y, eps):
        return F.cross_entropy(model(x), y)

    def preprocess(self, x):
        return (x + 0.05 * torch.randn_like(x)).clamp(0, 1)

class Orphan(Defense):
    name = "orphan"
    description = "trains as a defense that does not exist"
    training_recipe = "nonexistent"

    def loss(self, model, x, y, eps):
        return F.cross_entropy(model(x), y)

@hookimpl
def register_defenses(register):
    register(Sneaky)
    register(Orphan)
'''


def test_undeclared_randomness_is_detected_and_gets_eot(tmp_path, install_plugin):
    install_plugin("rbl-sneaky", "rbl_sneaky_plugin", SNEAKY)
    results = rbl.run(models="cnn", defenses="sneaky", attacks="fgsm", eps="0,0.1", dataset=TINY, epochs=1,
                      batch_size=64, device="cpu", cache_dir=tmp_path, eot=2)
    assert set(results["defense"]) == {"sneaky", "sneaky+eot"}
    row = results.attrs["metadata"]["evaluations"]["cnn/sneaky"]
    assert row["randomized_detected"] is True and row["randomized_declared"] is False
    assert rbl.ranking(results).set_index("defense")["flags"].to_dict() == {
        "sneaky": "random-without-eot", "sneaky+eot": ""}


def test_bad_training_recipe_and_eot(tmp_path, install_plugin):
    install_plugin("rbl-sneaky", "rbl_sneaky_plugin", SNEAKY)
    with pytest.raises(rbl.UsageError, match="defense 'orphan' trains as 'nonexistent': unknown defense"):
        rbl.run(defenses="orphan", dataset=TINY, models="cnn", device="cpu", cache_dir=tmp_path)
    with pytest.raises(rbl.UsageError, match="eot must be a positive number of gradient samples, got 0"):
        rbl.run(defenses="none", dataset=TINY, models="cnn", device="cpu", cache_dir=tmp_path, eot=0)


def test_naive_rows_are_listed_last_and_unranked(results):
    """A naive number measures the attacks' blindness: it must never outrank a real evaluation."""
    ranks = rbl.ranking(results)
    naive = ranks["defense"].isin(["jpeg", "gaussian-noise"])
    assert ranks.loc[naive, "rank"].isna().all()
    assert ranks.loc[~naive, "rank"].tolist() == list(range(1, (~naive).sum() + 1))
    assert naive.tolist() == sorted(naive.tolist())  # every naive row after every ranked one
    assert "| naive  | cnn     | jpeg " in results.attrs["files"]["md"].read_text()
