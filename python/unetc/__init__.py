"""unetc from Python: the same compiler and runtime as the `unetc` command, in-process.

    >>> import unetc
    >>> report = unetc.check("specs/original.unet")      # what `unetc check` prints
    >>> unetc.sizes("specs/original.unet")["height"]      # `unetc sizes --format json`
    >>> model = unetc.Model("spec.unet", "weights.safetensors")
    >>> probs = model.predict(images)                     # NHWC float32 in and out

Every function calls the library function the CLI calls; this file only turns its results into
Python objects.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from . import _unetc

__version__: str = _unetc.__version__
__all__ = [
    "ConversionError",
    "Conversion",
    "Diagnostic",
    "InternalError",
    "Model",
    "Report",
    "SpecError",
    "check",
    "convert_weights",
    "sizes",
    "tiles",
]

InternalError = _unetc.InternalError
PathOrText = Union[str, "os.PathLike[str]"]
SpecPath = Union[str, "os.PathLike[str]"]


@dataclass(frozen=True)
class Diagnostic:
    """One diagnostic of a spec, as `unetc check --format json` reports it."""

    severity: str  # "error" or "warning"
    code: str  # e.g. "E-concat-shape"
    message: str
    file: Optional[str] = None
    line: Optional[int] = None  # 1-based
    column: Optional[int] = None  # 1-based
    label: Optional[str] = None
    help: List[str] = field(default_factory=list)

    @staticmethod
    def _from_json(d: Dict[str, Any]) -> "Diagnostic":
        loc = d.get("location") or {}
        return Diagnostic(
            severity=d["severity"],
            code=d["code"],
            message=d["message"],
            file=loc.get("file"),
            line=loc.get("line"),
            column=loc.get("column"),
            label=loc.get("label"),
            help=list(d.get("help") or []),
        )


class SpecError(ValueError):
    """The spec has errors. `str(e)` is the rendered diagnostics (as `unetc check` prints them);
    `e.diagnostics` lists them."""

    def __init__(self, text: str, diagnostics: Sequence[Diagnostic]) -> None:
        super().__init__(text)
        self.text = text
        self.diagnostics = list(diagnostics)


@dataclass(frozen=True)
class Report:
    """What `unetc check` says about a spec without errors."""

    summary: str  # the text `unetc check` prints: Keras's summary and unetc's lines after it
    layers: List[Dict[str, Any]]  # one object per layer, as in `unetc check --format json`
    total_params: int
    trainable_params: int
    non_trainable_params: int
    diagnostics: List[Diagnostic]  # warnings
    diagnostics_text: str  # the warnings rendered as `unetc check` prints them (stderr)
    json: Dict[str, Any] = field(repr=False)  # the whole `unetc check --format json` object

    def __str__(self) -> str:
        return self.summary


def _spec_arg(spec: PathOrText) -> Tuple[Optional[str], Optional[str]]:
    """(path, None) for a path, (None, text) for spec text. A str is a path when it names an
    existing file or has no line break; spec text always has one."""
    if isinstance(spec, os.PathLike):
        return os.fspath(spec), None
    if not isinstance(spec, str):
        raise TypeError(f"a spec is a path or spec text (str), not {type(spec).__name__}")
    if "\n" in spec and not os.path.isfile(spec):
        return None, spec
    return spec, None


def _diagnostics(check_json: Dict[str, Any]) -> List[Diagnostic]:
    return [Diagnostic._from_json(d) for d in check_json.get("diagnostics", [])]


def check(
    spec: PathOrText,
    *,
    format: Optional[str] = None,
    style: str = "legacy",
    input_shape: Optional[Sequence[int]] = None,
    line_length: Optional[int] = None,
) -> Report:
    """`unetc check`: compiles a spec file or spec text. `format` ("dsl" or "yaml") is taken from
    the file's extension when None (text: the DSL). Raises SpecError when the spec has errors."""
    path, text = _spec_arg(spec)
    raw, summary, diags_text = _unetc.check(
        path,
        text,
        format,
        style,
        list(input_shape) if input_shape is not None else None,
        line_length,
    )
    obj = json.loads(raw)
    diagnostics = _diagnostics(obj)
    if any(d.severity == "error" for d in diagnostics):
        raise SpecError(diags_text, diagnostics)
    totals = obj["totals"]
    return Report(
        summary=summary,
        layers=obj["layers"],
        total_params=totals["params"],
        trainable_params=totals["trainable_params"],
        non_trainable_params=totals["non_trainable_params"],
        diagnostics=diagnostics,
        diagnostics_text=diags_text,
        json=obj,
    )


def _spec_error(path: str, failure: Exception) -> SpecError:
    """A SpecError for a spec file the library refused, with its diagnostics."""
    try:
        obj = json.loads(_unetc.check(path, None, None, "legacy", None, None)[0])
        diagnostics = _diagnostics(obj)
    except (OSError, ValueError):
        diagnostics = []
    return SpecError(str(failure.args[0]) if failure.args else str(failure), diagnostics)


def sizes(spec: SpecPath, *, near: Optional[int] = None, max: int = 2048) -> Dict[str, Any]:
    """`unetc sizes SPEC --format json`: the input sizes the spec accepts (each axis tried from 1
    to `max`), in closed form, and the output size each gives."""
    path = os.fspath(spec)
    try:
        return json.loads(_unetc.sizes(path, near, max))
    except _unetc.SpecFailure as e:
        raise _spec_error(path, e) from None


def tiles(
    spec: SpecPath,
    *,
    image: Union[Tuple[int, int], Tuple[int, int, int]],
    memory: Union[int, str] = "8GiB",
    max: int = 2048,
) -> Dict[str, Any]:
    """`unetc tiles SPEC --image WxH --memory M --format json`, with `image` in array order like
    a numpy array's shape: (height, width), or (depth, height, width) for a volume model (the
    CLI's `--image DxHxW`); `memory` in bytes or as "2GiB", "512MiB"."""
    path = os.fspath(spec)
    try:
        return json.loads(_unetc.tiles(path, [int(n) for n in image], str(memory), max))
    except _unetc.SpecFailure as e:
        raise _spec_error(path, e) from None


class ConversionError(ValueError):
    """PyTorch weights that could not be bound to the spec's layers. `str(e)` says which and why;
    `e.proposal` is the text of a proposed map (lines marked `?` to check) when unetc could
    guess one, else None."""

    def __init__(self, message: str, proposal: Optional[str]) -> None:
        super().__init__(message)
        self.proposal = proposal


@dataclass(frozen=True)
class Conversion:
    """What `convert_weights` wrote. `binding`: how modules met layers, "map" (the map file),
    "order" (module order, every shape fitting) or "shapes" (the only pairing shapes allow)."""

    tensors: int
    modules_bound: int
    binding: str
    ignored: List[str]
    order_only: int


def convert_weights(
    spec: SpecPath,
    state_dict: SpecPath,
    output: SpecPath,
    *,
    map: Optional[SpecPath] = None,
    force: bool = False,
) -> Conversion:
    """`unetc convert-weights SPEC STATE_DICT --from pytorch [--map MAP] -o OUTPUT`: a PyTorch
    state_dict saved with `safetensors.torch.save_file(model.state_dict(), STATE_DICT)` written
    as `output` in unetc's naming and layouts, for `Model(spec, output)`. `order_only` counts
    layers whose shapes other modules share, so that only the module order placed them: pass a
    `map` if the PyTorch modules are not declared in the order they run."""
    path = os.fspath(spec)
    try:
        text = _unetc.convert_weights(
            path,
            os.fspath(state_dict),
            os.fspath(output),
            None if map is None else os.fspath(map),
            force,
        )
    except _unetc.SpecFailure as e:
        raise _spec_error(path, e) from None
    except _unetc.ConversionFailure as e:
        message, proposal = e.args
        raise ConversionError(message, proposal) from None
    r = json.loads(text)
    return Conversion(
        tensors=r["tensors"],
        modules_bound=r["modules_bound"],
        binding=r["binding"],
        ignored=list(r["ignored"]),
        order_only=r["order_only"],
    )


class Model:
    """A spec compiled and its weights (safetensors, as `unetc run --weights`) bound once.

    `device`: "cpu", "cuda" (RuntimeError without a usable GPU) or "auto". `precision`: "f32",
    or "tf32"/"bf16" on CUDA. `output_layer`: the layer whose output `predict` returns (another
    output of a deep-supervision model, or a layer's features); by default the model's first
    output, with a UserWarning when the spec has several (`outputs` lists them)."""

    def __init__(
        self,
        spec: SpecPath,
        weights: SpecPath,
        device: str = "cpu",
        precision: str = "f32",
        output_layer: Optional[str] = None,
    ) -> None:
        path = os.fspath(spec)
        try:
            self._model = _unetc.Model(path, os.fspath(weights), device, precision, output_layer)
        except _unetc.SpecFailure as e:
            raise _spec_error(path, e) from None
        outputs = self.outputs
        if output_layer is None and len(outputs) > 1:
            warnings.warn(
                f"the model has {len(outputs)} outputs ({', '.join(outputs)}); predict returns "
                f"the first, {outputs[0]!r}: pass output_layer= to choose another",
                UserWarning,
                stacklevel=2,
            )

    @property
    def outputs(self) -> Tuple[str, ...]:
        """The names of the spec's outputs, in its order."""
        return tuple(self._model.outputs)

    @property
    def input_shape(self) -> Tuple[int, ...]:
        """One item's input shape, e.g. (H, W, C)."""
        return tuple(self._model.input_shape)

    @property
    def output_shape(self) -> Tuple[int, ...]:
        """One item's output shape, e.g. (H', W', K)."""
        return tuple(self._model.output_shape)

    @property
    def device(self) -> str:
        """Where the model runs: "cpu" or "cuda"."""
        return self._model.device

    def predict(self, x: Any, batch_size: int = 1) -> Any:
        """The model's output for `x`: float32, (N, H, W, C) or one (H, W, C) image at the
        model's input size, in forward passes of `batch_size`. The GIL is released meanwhile."""
        return self._model.predict(x, batch_size)

    def predict_large(self, x: Any, batch_size: int = 1) -> Any:
        """As `unetc run` on an array: images of any size, overlap-tiled (valid padding) or
        mirror-padded and cropped back (same padding); `batch_size` tiles per pass."""
        return self._model.predict_large(x, batch_size)

    def __repr__(self) -> str:
        return f"unetc.Model(input_shape={self.input_shape}, output_shape={self.output_shape}, device={self.device!r})"
