"""unetc's Python API against the unetc CLI: the same answers, in-process."""

import json
import threading
import warnings

import numpy as np
import pytest

import unetc
from conftest import ROOT, SPECS

ORIGINAL = ROOT / "specs" / "original.unet"
BROKEN = "model {\n  input 10x10x1\n  conv2d(4, 3) -> concatenate()\n}\n"


def test_check_summary_equals_cli(cli):
    report = unetc.check(ORIGINAL)
    assert report.summary == cli("check", ORIGINAL).stdout
    assert str(report) == report.summary
    assert unetc.check(ORIGINAL, style="tf-keras").summary == cli(
        "check", ORIGINAL, "--style", "tf-keras"
    ).stdout


def test_check_table_and_totals_equal_cli_json(cli):
    report = unetc.check(str(ORIGINAL))
    expected = json.loads(cli("check", ORIGINAL, "--format", "json").stdout)
    assert report.json == expected
    assert report.layers == expected["layers"]
    assert report.total_params == expected["totals"]["params"] == 31_030_658
    conv = report.layers[1]
    assert (conv["name"], conv["class"], conv["output_shape"], conv["params"]) == (
        "conv2d",
        "Conv2D",
        [None, 570, 570, 64],
        # 3x3 kernel over 1 channel, 64 filters, plus 64 biases
        3 * 3 * 1 * 64 + 64,
    )
    assert report.diagnostics == []


def test_check_text_equals_check_file():
    text = ORIGINAL.read_text()
    assert unetc.check(text).summary == unetc.check(ORIGINAL).summary
    yaml = (ROOT / "specs" / "original.yaml").read_text()
    assert unetc.check(yaml, format="yaml").layers == unetc.check(ORIGINAL).layers


def test_check_input_shape_like_cli(cli):
    report = unetc.check(ORIGINAL, input_shape=(380, 380, 1))
    assert report.summary == cli("check", ORIGINAL, "--input-shape", "380x380x1").stdout


def test_broken_spec_raises_spec_error_with_diagnostics(cli, tmp_path):
    with pytest.raises(unetc.SpecError) as info:
        unetc.check(BROKEN)
    e = info.value
    assert isinstance(e, ValueError)
    [d] = e.diagnostics
    assert d.severity == "error" and d.code == "E-arity"
    # `concatenate` starts on line 3 of BROKEN, 1-based column from the text itself:
    assert d.line == 3
    assert d.column == BROKEN.splitlines()[2].index("concatenate") + 1
    # The same rendering the CLI prints for the same text in a file.
    f = tmp_path / "broken.unet"
    f.write_text(BROKEN)
    p = cli("check", f, ok=False)
    assert p.returncode == 1
    assert str(e) == p.stderr.replace(str(f), "<string>")
    with pytest.raises(unetc.SpecError) as from_file:
        unetc.check(f)
    assert str(from_file.value) == p.stderr


def test_missing_spec_file():
    with pytest.raises(FileNotFoundError):
        unetc.check(ROOT / "no-such-spec.unet")
    with pytest.raises(FileNotFoundError):
        unetc.check("no-such-spec.unet")


def test_sizes_and_tiles_equal_cli_json(cli):
    assert unetc.sizes(ORIGINAL, near=500) == json.loads(
        cli("sizes", ORIGINAL, "--near", "500", "--format", "json").stdout
    )
    # `--image` is W x H; the Python `image` is (height, width) like an array's shape.
    got = unetc.tiles(ORIGINAL, image=(1536, 2048), memory="2GiB")
    assert got == json.loads(
        cli("tiles", ORIGINAL, "--image", "2048x1536", "--memory", "2GiB", "--format", "json").stdout
    )
    assert got["image"] == {"height": 1536, "width": 2048}
    assert unetc.tiles(ORIGINAL, image=(1536, 2048), memory=2 << 30) == got


VOLUME = ROOT / "specs" / "library" / "unet3d.unet"


def test_volume_sizes_and_tiles_equal_cli_json(cli):
    """A volume model: per-axis sizes, and tiles for (depth, height, width), as the CLI's JSON."""
    got = unetc.sizes(VOLUME, near=150, max=256)
    assert got == json.loads(
        cli("sizes", VOLUME, "--near", "150", "--max", "256", "--format", "json").stdout
    )
    # `--image` for a volume is D x H x W, the same array order as the Python `image`.
    got = unetc.tiles(VOLUME, image=(155, 240, 240), memory="4GiB")
    assert got == json.loads(
        cli("tiles", VOLUME, "--image", "155x240x240", "--memory", "4GiB", "--format", "json").stdout
    )
    assert got["volume"] == {"depth": 155, "height": 240, "width": 240}
    with pytest.raises(ValueError, match=r"volume model.*\(depth, height, width\)"):
        unetc.tiles(VOLUME, image=(240, 240))
    with pytest.raises(ValueError, match=r"takes images.*\(height, width\)"):
        unetc.tiles(ORIGINAL, image=(10, 240, 240))


def test_sizes_and_tiles_refusals(tmp_path):
    f = tmp_path / "broken.unet"
    f.write_text(BROKEN)
    with pytest.raises(unetc.SpecError) as info:
        unetc.sizes(f)
    assert [d.code for d in info.value.diagnostics] == ["E-arity"]
    with pytest.raises(ValueError, match="memory"):
        unetc.tiles(ORIGINAL, image=(100, 100), memory="lots")
    with pytest.raises(ValueError, match="1..=1048576"):
        unetc.tiles(ORIGINAL, image=(0, 100))


def _run_cli(cli, tmp_path, spec, weights, x, *extra):
    """`unetc run` on `x` saved as .npy; returns the .npy it writes."""
    src = tmp_path / "in.npy"
    dst = tmp_path / "out.npy"
    np.save(src, x)
    cli("run", spec, "--weights", weights, "--input", src, "-o", dst, "--device", "cpu", "--force", *extra)
    return np.load(dst)


def test_predict_equals_unetc_run(cli, weights, tmp_path):
    spec = SPECS / "small_valid.unet"
    x = np.random.default_rng(1).random((3, 44, 44, 1), dtype=np.float32)
    model = unetc.Model(spec, weights["small_valid"])
    assert model.input_shape == (44, 44, 1) and model.output_shape == (28, 28, 2)
    assert model.device == "cpu"
    got = model.predict(x)
    assert got.dtype == np.float32 and got.shape == (3, 28, 28, 2)
    expected = _run_cli(cli, tmp_path, spec, weights["small_valid"], x)
    np.testing.assert_array_equal(got, expected)
    # Softmax over 2 channels: each pixel's probabilities sum to 1.
    np.testing.assert_allclose(got.sum(axis=-1), 1.0, atol=1e-6)
    # One HWC image gives one HWC output; batches of 2 the same values as batches of 1 here.
    np.testing.assert_array_equal(model.predict(x[1]), expected[1])
    np.testing.assert_allclose(model.predict(x, batch_size=2), expected, rtol=0, atol=1e-6)
    # A Fortran-ordered (non-contiguous C) array is read in logical order.
    np.testing.assert_array_equal(model.predict(np.asfortranarray(x)), expected)


def test_predict_from_threads(weights):
    model = unetc.Model(SPECS / "small_valid.unet", weights["small_valid"])
    xs = [np.random.default_rng(i).random((2, 44, 44, 1), dtype=np.float32) for i in range(4)]
    alone = [model.predict(x) for x in xs]
    together = [None] * len(xs)

    def work(i):
        together[i] = model.predict(xs[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(xs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for a, b in zip(alone, together):
        np.testing.assert_array_equal(a, b)


def test_predict_large_equals_tiled_unetc_run(cli, weights, tmp_path):
    # Valid padding: 44 -> 28, so a 70 x 100 image is covered by overlapping tiles.
    spec = SPECS / "small_valid.unet"
    x = np.random.default_rng(2).random((2, 70, 100, 1), dtype=np.float32)
    model = unetc.Model(spec, weights["small_valid"])
    got = model.predict_large(x, batch_size=3)
    assert got.shape == (2, 70, 100, 2)
    np.testing.assert_array_equal(got, _run_cli(cli, tmp_path, spec, weights["small_valid"], x, "--batch", "3"))
    # Same padding: 37 x 50 is mirror-padded to a size the model takes and cropped back.
    spec = SPECS / "small_same.unet"
    x = np.random.default_rng(3).random((37, 50, 3), dtype=np.float32)
    model = unetc.Model(spec, weights["small_same"])
    got = model.predict_large(x)
    assert got.shape == (37, 50, 1)
    np.testing.assert_array_equal(got, _run_cli(cli, tmp_path, spec, weights["small_same"], x)[0])
    # At the model's own size predict_large is predict.
    y = np.random.default_rng(4).random((32, 32, 3), dtype=np.float32)
    np.testing.assert_array_equal(model.predict_large(y), model.predict(y))


def test_bad_inputs_are_value_errors(weights):
    model = unetc.Model(SPECS / "small_valid.unet", weights["small_valid"])
    good = np.zeros((1, 44, 44, 1), np.float32)
    expected = r"\(N, 44, 44, 1\)"
    with pytest.raises(ValueError, match=r"dtype is float64.*" + expected):
        model.predict(good.astype(np.float64))
    with pytest.raises(ValueError, match=r"shape \(1, 44, 40, 1\).*" + expected + ".*predict_large"):
        model.predict(np.zeros((1, 44, 40, 1), np.float32))
    with pytest.raises(ValueError, match=r"shape \(44, 44\);.*" + expected):
        model.predict(np.zeros((44, 44), np.float32))
    with pytest.raises(ValueError, match=r"shape \(0, 44, 44, 1\)"):
        model.predict(np.zeros((0, 44, 44, 1), np.float32))
    with pytest.raises(ValueError, match=r"shape \(1, 50, 50, 3\)"):
        model.predict_large(np.zeros((1, 50, 50, 3), np.float32))
    with pytest.raises(TypeError, match="not a numpy array"):
        model.predict([[0.0]])
    bad = good.copy()
    bad[0, 3, 5, 0] = np.nan
    bad[0, 7, 1, 0] = np.inf
    with pytest.raises(ValueError, match=r"2 of 1936 values are NaN or infinite \(the first, at index \[0, 3, 5, 0\]"):
        model.predict(bad)
    with pytest.raises(ValueError, match="-inf"):
        model.predict_large(np.full((1, 60, 60, 1), -np.inf, np.float32))
    with pytest.raises(ValueError, match="batch_size"):
        model.predict(good, batch_size=0)


def test_model_refusals(weights, tmp_path):
    with pytest.raises(unetc.SpecError) as info:
        f = tmp_path / "broken.unet"
        f.write_text(BROKEN)
        unetc.Model(f, weights["small_valid"])
    assert [d.code for d in info.value.diagnostics] == ["E-arity"]
    # The weights of another model: every mismatch is named.
    with pytest.raises(ValueError, match="conv2d"):
        unetc.Model(SPECS / "small_valid.unet", weights["small_same"])
    with pytest.raises(FileNotFoundError):
        unetc.Model(SPECS / "small_valid.unet", tmp_path / "none.safetensors")
    with pytest.raises(ValueError, match="device"):
        unetc.Model(SPECS / "small_valid.unet", weights["small_valid"], device="tpu")


def test_cuda_without_gpu_is_a_runtime_error(weights):
    try:
        model = unetc.Model(SPECS / "small_valid.unet", weights["small_valid"], device="cuda")
    except RuntimeError as e:
        assert "no usable CUDA GPU" in str(e) and 'device="cpu"' in str(e)
    else:
        assert model.device == "cuda"


def test_model_keeps_the_spec_it_loaded(weights, tmp_path):
    # predict_large compiles the spec again at a padded size; it must be the text loaded, not
    # whatever the file holds by then.
    spec = tmp_path / "same.unet"
    text = (SPECS / "small_same.unet").read_text()
    spec.write_text(text)
    model = unetc.Model(spec, weights["small_same"])
    x = np.random.default_rng(6).random((37, 50, 3), dtype=np.float32)
    before = model.predict_large(x)
    assert "activation: sigmoid" in text
    spec.write_text(text.replace("activation: sigmoid", "activation: linear"))
    np.testing.assert_array_equal(model.predict_large(x), before)
    # A model loaded from the changed file does differ (so the check above can fail).
    assert not np.array_equal(unetc.Model(spec, weights["small_same"]).predict_large(x), before)


def test_warnings_are_in_the_report_not_raised(cli, tmp_path):
    text = (
        "model:\n  input: [8, 8, 1]\n  layers:\n    - {conv2d: [2, 3], name: side}\n"
        "    - {conv2d: [1, 1], name: out, inputs: input_1}\n  outputs: [out]\n"
    )
    report = unetc.check(text, format="yaml")
    [d] = report.diagnostics
    assert (d.severity, d.code) == ("warning", "W-unused")
    assert (d.line, d.column) == (4, text.splitlines()[3].index("{") + 1)
    # Only `out` is in the model: a 1x1 kernel over 1 channel, 1 filter, and its bias.
    assert report.total_params == 1 * 1 * 1 * 1 + 1
    f = tmp_path / "warn.yaml"
    f.write_text(text)
    p = cli("check", f)
    assert report.summary == p.stdout
    assert report.diagnostics_text == p.stderr.replace(str(f), "<string>")


def _fixture_io(stem):
    """tests/onnx_import/STEM.io.safetensors: the input and PyTorch's own output (NCHW), made by
    tests/onnx_import/generate.py with real PyTorch."""
    from safetensors.numpy import load_file

    io = load_file(str(ROOT / "tests" / "onnx_import" / f"{stem}.io.safetensors"))
    return io["input"].transpose(0, 2, 3, 1), io["torch_output"].transpose(0, 2, 3, 1)


def test_convert_weights_runs_like_pytorch(cli, tmp_path):
    stem = "plain_sequential"
    fixtures = ROOT / "tests" / "onnx_import"
    spec = tmp_path / f"{stem}.unet"
    cli("import", fixtures / f"{stem}.onnx", "-o", spec,
        "--weights-out", tmp_path / "onnx.safetensors")
    out = tmp_path / "converted.safetensors"
    conv = unetc.convert_weights(spec, fixtures / f"{stem}.state_dict.safetensors", out)
    assert conv.binding == "order" and conv.ignored == []
    assert conv.tensors > 0 and conv.modules_bound > 0
    x, want = _fixture_io(stem)
    got = unetc.Model(spec, out).predict(np.ascontiguousarray(x))
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
    # The CLI writes the same file.
    cli_out = tmp_path / "cli.safetensors"
    cli("convert-weights", spec, fixtures / f"{stem}.state_dict.safetensors",
        "--from", "pytorch", "-o", cli_out)
    assert cli_out.read_bytes() == out.read_bytes()
    with pytest.raises(ValueError, match="exists; pass force=True"):
        unetc.convert_weights(spec, fixtures / f"{stem}.state_dict.safetensors", out)


def test_convert_weights_refusal_carries_the_proposed_map(cli, tmp_path):
    stem = "plain_transpose"
    fixtures = ROOT / "tests" / "onnx_import"
    spec = tmp_path / f"{stem}.unet"
    cli("import", fixtures / f"{stem}.onnx", "-o", spec,
        "--weights-out", tmp_path / "onnx.safetensors")
    out = tmp_path / "converted.safetensors"
    with pytest.raises(unetc.ConversionError) as e:
        unetc.convert_weights(spec, fixtures / f"{stem}.state_dict.safetensors", out)
    assert "nothing tells them apart" in str(e.value)
    assert "? c1.1 -> d1_d1_1_BatchNormalization" in e.value.proposal
    assert not out.exists()


def test_multi_output_models_say_which_output_predict_returns(cli, tmp_path):
    spec = SPECS / "two_heads.unet"
    w = tmp_path / "two_heads.safetensors"
    cli("init-weights", spec, "-o", w, "--seed", "3")
    x = np.random.default_rng(5).random((2, 16, 16, 1), dtype=np.float32)
    with pytest.warns(UserWarning, match="predict returns the first, 'coarse_head'"):
        first = unetc.Model(spec, w)
    assert first.outputs == ("coarse_head", "final_head")
    np.testing.assert_array_equal(first.predict(x), _run_cli(cli, tmp_path, spec, w, x))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        final = unetc.Model(spec, w, output_layer="final_head")
    assert final.outputs == ("coarse_head", "final_head")
    want = _run_cli(cli, tmp_path, spec, w, x, "--output-layer", "final_head")
    np.testing.assert_array_equal(final.predict(x), want)
    assert np.abs(final.predict(x) - first.predict(x)).max() > 1e-3
    # Images of other sizes are mirror-padded as for the model's own output.
    big = np.random.default_rng(6).random((1, 40, 24, 1), dtype=np.float32)
    want = _run_cli(cli, tmp_path, spec, w, big, "--output-layer", "final_head")
    np.testing.assert_array_equal(final.predict_large(big), want)
    with pytest.raises(unetc.SpecError, match="--output-layer `nope`: the model has no layer"):
        unetc.Model(spec, w, output_layer="nope")


def test_predict_takes_token_arrays(cli, tmp_path):
    """A model whose input is tokens, not an image (UNETR's patches, tests/real_models'
    github_unetr_2d from real tf.keras): predict takes (N, T, F) or one (T, F) item and gives
    Keras's output; another item shape is a ValueError naming the model's."""
    from safetensors.numpy import load_file

    real = ROOT / "tests" / "real_models"
    spec = tmp_path / "unetr.unet"
    cli("import", real / "github_unetr_2d.json", "-o", spec)
    io = load_file(str(real / "github_unetr_2d.io.safetensors"))
    model = unetc.Model(spec, real / "github_unetr_2d.weights.safetensors")
    got = model.predict(io["input"], batch_size=2)
    assert got.shape == io["output"].shape
    assert np.abs(got - io["output"]).max() < 1e-5
    one = model.predict(io["input"][1])
    assert one.shape == io["output"].shape[1:]
    assert np.abs(one - io["output"][1]).max() < 1e-5
    with pytest.raises(ValueError, match=r"\(N, 16, 48\)"):
        model.predict(np.zeros((2, 16, 47), dtype=np.float32))
