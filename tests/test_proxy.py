"""Derivation without device data (nuwa.proxy): EM, the gmm.json privacy contract, selection, CLI.

The public pool is test_derive's six-class blob set; the device holds its own, separately drawn
images of two classes (north, south) and shares only gmm.json.
"""
import json
import shutil

import numpy as np
import pytest

import nuwa
from nuwa import cli
from nuwa.options import DeriveOptions
from nuwa.derivation import derive
from nuwa.base import load_base
from nuwa.errors import NuwaError
from nuwa.proxy import (
    GaussianMixture, embed, feature_projection, fit_device_gmm, fit_gmm, open_proxy_subtask, read_gmm, select,
    weights_sha256,
)
from tests.test_derive import FAST, write_blobs  # the blob set `npz` is a session fixture (conftest)

DEVICE = ["north", "south"]


@pytest.fixture(scope="module")
def base_dir(npz, tmp_path_factory):
    """test_derive's base, smaller and trained in-process (its subprocess pretraining alone took
    30-90 s on the shared 2-core machine); the blob task is still learnt to test top-1 1.0."""
    from nuwa.pretrain import pretrain

    out = tmp_path_factory.mktemp("models") / "base"
    _, report = pretrain("deit_tiny_patch16_224", npz, out=out, patch_size=7, embed_dim=32, depth=3, num_heads=2,
                         epochs=3, batch_size=32, augment=False, seed=0)
    assert report["test_top1"] > 0.9
    return out


@pytest.fixture(scope="module")
def fast_options(tmp_path_factory):
    path = tmp_path_factory.mktemp("opts") / "fast.yaml"
    path.write_text("".join(f"{k}: {v}\n" for k, v in FAST.items()))
    return path


@pytest.fixture(scope="module")
def device_npz(tmp_path_factory):
    """The device's own data: other draws of classes 0 and 1, labelled with the base's names."""
    return write_blobs(tmp_path_factory.mktemp("device") / "device.npz", seed=1, n_train=240, n_test=60, n_classes=2)


@pytest.fixture(scope="module")
def gmm_file(base_dir, device_npz, tmp_path_factory):
    out = tmp_path_factory.mktemp("gmm") / "gmm.json"
    fit_device_gmm(base_dir, f"npz:{device_npz}", classes=",".join(DEVICE), out=out, components=4, samples=200,
                   seed=0)
    return out


def test_em_recovers_a_two_component_mixture():
    rng = np.random.default_rng(0)
    w, mu, var = np.array([0.3, 0.7]), np.array([[-2.0, 0.0], [3.0, 1.0]]), np.array([[0.5, 1.0], [1.5, 0.3]])
    z = rng.random(4000) < w[0]
    x = np.where(z[:, None], mu[0] + np.sqrt(var[0]) * rng.standard_normal((4000, 2)),
                 mu[1] + np.sqrt(var[1]) * rng.standard_normal((4000, 2)))
    gmm, em = fit_gmm(x, components=2, seed=0)
    order = np.argsort(gmm.means[:, 0])
    assert em["converged"]
    np.testing.assert_allclose(gmm.weights[order], w, atol=0.03)
    np.testing.assert_allclose(gmm.means[order], mu, atol=0.1)
    np.testing.assert_allclose(gmm.variances[order], var, rtol=0.1)
    # The likelihood EM maximised beats the true parameters' only by sampling noise.
    true = GaussianMixture(weights=w, means=mu, variances=var)
    assert em["mean_log_likelihood"] >= true.log_prob(x).mean() - 1e-9
    again, _ = fit_gmm(x, components=2, seed=0)
    assert np.array_equal(again.means, gmm.means)  # seeded


def test_em_floors_variances_and_drops_empty_components():
    x = np.c_[np.random.default_rng(0).standard_normal(200), np.zeros(200)]  # a constant dimension
    gmm, _ = fit_gmm(x, components=3, seed=0)
    assert (gmm.variances > 0).all() and np.isfinite(gmm.log_prob(x)).all()
    two = np.r_[np.zeros((50, 2)), np.ones((3, 2)) * 10]  # 3 far samples: too few for a component of their own
    gmm, _ = fit_gmm(two, components=2, seed=0)
    assert gmm.components == 1 and abs(gmm.weights.sum() - 1) < 1e-12
    with pytest.raises(NuwaError, match="K=0"):
        fit_gmm(x, components=0)


def test_stratified_selection_keeps_the_mixture_proportions():
    # Two equally weighted components, one much denser: a plain top-n takes only the dense one.
    gmm = GaussianMixture(weights=np.array([0.5, 0.5]), means=np.array([[0.0], [10.0]]),
                          variances=np.array([[0.01], [4.0]]))
    rng = np.random.default_rng(0)
    x = np.r_[0.1 * rng.standard_normal((100, 1)), 10 + 2 * rng.standard_normal((100, 1))]
    comp = gmm.component_log_prob(x)
    top = select(gmm, comp, 50, how="top")
    strat = select(gmm, comp, 50)
    assert (top < 100).all()
    assert (strat < 100).sum() == 25 and len(set(strat.tolist())) == 50
    assert np.all(np.diff(gmm.log_prob(x)[strat]) <= 0)  # best first
    assert len(select(gmm, comp, 500)) == 200


def test_gmm_file_holds_only_mixture_parameters(base_dir, device_npz, gmm_file):
    doc = json.loads(gmm_file.read_text())
    assert set(doc) == {"format", "base_sha256", "class_names", "feature", "covariance", "components",
                        "components_requested", "weights", "means", "variances", "samples", "seed", "em"}
    assert doc["class_names"] == DEVICE and doc["samples"] == 200 and doc["seed"] == 0
    assert doc["base_sha256"] == json.loads((base_dir / "report.json").read_text())["weights_sha256"]
    assert str(device_npz) not in gmm_file.read_text()
    k, r = doc["components"], doc["feature"]["dims"]
    _, gmm, sha = read_gmm(gmm_file)
    assert sha == nuwa.io.sha256_file(gmm_file)
    assert gmm.components == k and abs(gmm.weights.sum() - 1) < 1e-9 and (gmm.variances > 0).all()
    assert np.shape(doc["means"]) == np.shape(doc["variances"]) == (k, r) and r <= 6
    # No array as long as the device's sample count, and no mean equal to a device feature vector.

    def arrays(o):
        if isinstance(o, list):
            yield o
            for v in o:
                yield from arrays(v)
        elif isinstance(o, dict):
            for v in o.values():
                yield from arrays(v)

    assert all(len(a) not in (200, 240) for a in arrays(doc))
    base = nuwa.load(base_dir)
    from nuwa.data import class_subset, open_split

    own = class_subset(open_split(f"npz:{device_npz}", "train"), [0, 1])
    feats, _ = embed(base, own, feature_projection(base, dims=r), desc=None)
    means = np.asarray(doc["means"])
    dist = np.sqrt(((feats[:, None, :] - means[None]) ** 2).sum(-1))
    assert dist.min() > 1e-3, dist.min()
    assert not np.isin(np.round(feats, 6), np.round(means, 6)).any()


def test_selection_prefers_the_device_classes(base_dir, npz, gmm_file):
    base, _ = load_base(base_dir)
    task = open_proxy_subtask(npz, base, gmm_path=gmm_file, opts=DeriveOptions(**FAST).validate())
    p = task.proxy
    assert task.class_names == DEVICE and task.classes == [0, 1]
    assert p["base_rate"] == pytest.approx(2 / 6, abs=0.05)
    assert p["precision"] >= 0.85, p  # base rate 1/3; measured 0.94
    assert set(p["per_class"]) == set(DEVICE) and min(p["per_class"].values()) > 0.3 * p["selected"] / 2
    assert p["selected"] == len(task.fit) + len(task.val) and p["pool"] == 1200
    # A looser selection (half the pool) is still far above the base rate.
    loose = open_proxy_subtask(npz, base, gmm_path=gmm_file, opts=DeriveOptions(proxy_quantile=0.5, **FAST))
    assert loose.proxy["top"] == 600 and loose.proxy["precision"] >= 0.55


def test_own_data_derivation_reports_its_regime(base_dir, npz):
    _, report = derive(base_dir, npz, classes=DEVICE, rate=0.3, recovery="none", options=DeriveOptions(**FAST))
    assert report["data_regime"] == "own" and report["proxy"] is None


def test_fit_gmm_then_derive_never_reads_the_device_data(base_dir, npz, device_npz, fast_options, tmp_path,
                                                         capsys):
    own = tmp_path / "own.npz"
    shutil.copy(device_npz, own)
    gmm = tmp_path / "up" / "gmm.json"
    code = cli.main(["fit-gmm", "--model", str(base_dir), "--data", f"npz:{own}", "--classes", "north,south",
                     "--components", "4", "--samples", "200", "--out", str(gmm)])
    assert code == 0 and json.loads(capsys.readouterr().out.strip().splitlines()[-1])["samples"] == 200
    own.unlink()  # the server side must not need the device's data
    out = tmp_path / "edge"
    # In-process (cli.main, as `nuwa derive` runs it): a subprocess would pay torch's start-up and
    # first-use costs again, about 30 s on the shared test machine.
    code = cli.main(["derive", "--model", str(base_dir), "--proxy-gmm", str(gmm), "--public-data", npz,
                     "--rate", "0.5", "--recovery", "finetune", "--finetune-epochs", "1", "--options", str(fast_options), "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["data_regime"] == "proxy" and summary["proxy_precision"] >= 0.85
    report = json.loads((out / "report.json").read_text())
    assert report["data_regime"] == "proxy" and report["class_names"] == DEVICE
    for key in ("gmm_sha256", "components", "selected", "per_class", "precision", "pool"):
        assert key in report["proxy"], key
    assert report["proxy"]["gmm_sha256"] == nuwa.io.sha256_file(gmm)
    edge = nuwa.load(out)
    assert edge.config.classes == [0, 1] and report["rate_achieved"] >= 0.5
    assert cli.main(["eval", "--model", str(out), "--data", npz]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["top1"] > 0.8


def _main(capsys, *argv):
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as e:  # argparse's own errors
        code = e.code
    err = capsys.readouterr().err.strip().splitlines()
    return code, [l for l in err if "error:" in l]


def _bad_gmm(tmp_path, gmm_file, case):
    path = tmp_path / "gmm.json"
    doc = json.loads(gmm_file.read_text())
    if case == "corrupt":
        path.write_text(gmm_file.read_text()[:200])
        return path
    if case == "unknown class":
        doc["class_names"] = ["north", "nowhere"]
    if case == "variances":
        doc["variances"][0][0] = -1.0
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize("case, needle", [("corrupt", "not valid JSON"), ("unknown class", "'nowhere'"),
                                          ("variances", "variances must be positive")])
def test_a_bad_gmm_file_is_refused_before_any_work(base_dir, npz, gmm_file, tmp_path, capsys, case, needle):
    gmm = _bad_gmm(tmp_path, gmm_file, case)
    out = tmp_path / "edge"
    code, errors = _main(capsys, "derive", "--model", base_dir, "--proxy-gmm", gmm, "--public-data", npz,
                         "--rate", "0.5", "--out", out)
    assert code == 2 and len(errors) == 1 and needle in errors[0] and str(gmm) in errors[0], errors
    assert not out.exists()


def test_a_gmm_of_another_base_is_refused_naming_both_checksums(base_dir, npz, gmm_file, tmp_path, capsys):
    other = nuwa.EdgeViT(nuwa.load(base_dir).config)  # same architecture, other (random) weights
    nuwa.save(other, tmp_path / "other")
    code, errors = _main(capsys, "derive", "--model", tmp_path / "other", "--proxy-gmm", gmm_file,
                         "--public-data", npz, "--rate", "0.5", "--out", tmp_path / "edge")
    assert code == 2 and len(errors) == 1, errors
    assert json.loads(gmm_file.read_text())["base_sha256"] in errors[0] and weights_sha256(other) in errors[0]


@pytest.mark.parametrize("flags, needle", [
    (["--components", "0"], "'0'"),
    (["--components", "30"], "K=30"),
    (["--classes", "north,nowhere"], "'nowhere'"),
    (["--seed", "-1"], "seed=-1"),
])
def test_bad_fit_gmm_input_exits_2_naming_the_value(base_dir, device_npz, tmp_path, capsys, flags, needle):
    args = {"--model": base_dir, "--data": f"npz:{device_npz}", "--classes": "north,south",
            "--out": tmp_path / "gmm.json", **dict(zip(flags[::2], flags[1::2]))}
    code, errors = _main(capsys, "fit-gmm", *[t for kv in args.items() for t in kv])
    assert code == 2 and len(errors) == 1 and needle in errors[0], errors
    assert not (tmp_path / "gmm.json").exists()


def test_proxy_samples_and_quantile_exclude_each_other():
    with pytest.raises(NuwaError, match="proxy_quantile=0.5"):
        DeriveOptions(proxy_samples=10, proxy_quantile=0.5).validate()


def test_public_data_needs_a_gmm(base_dir, npz, tmp_path, capsys):
    code, errors = _main(capsys, "derive", "--model", base_dir, "--public-data", npz, "--classes", "north,south",
                         "--rate", "0.5", "--out", tmp_path / "edge")
    assert code == 2 and "--proxy-gmm" in errors[0]
