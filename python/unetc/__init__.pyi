import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import numpy.typing as npt

__version__: str
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
PathOrText = Union[str, os.PathLike[str]]
SpecPath = Union[str, os.PathLike[str]]

class InternalError(RuntimeError): ...

@dataclass(frozen=True)
class Diagnostic:
    severity: str
    code: str
    message: str
    file: Optional[str] = ...
    line: Optional[int] = ...
    column: Optional[int] = ...
    label: Optional[str] = ...
    help: List[str] = ...

class SpecError(ValueError):
    text: str
    diagnostics: List[Diagnostic]
    def __init__(self, text: str, diagnostics: Sequence[Diagnostic]) -> None: ...

@dataclass(frozen=True)
class Report:
    summary: str
    layers: List[Dict[str, Any]]
    total_params: int
    trainable_params: int
    non_trainable_params: int
    diagnostics: List[Diagnostic]
    diagnostics_text: str
    json: Dict[str, Any]

def check(
    spec: PathOrText,
    *,
    format: Optional[str] = ...,
    style: str = ...,
    input_shape: Optional[Sequence[int]] = ...,
    line_length: Optional[int] = ...,
) -> Report: ...
def sizes(spec: SpecPath, *, near: Optional[int] = ..., max: int = ...) -> Dict[str, Any]: ...
def tiles(
    spec: SpecPath,
    *,
    image: Union[Tuple[int, int], Tuple[int, int, int]],
    memory: Union[int, str] = ...,
    max: int = ...,
) -> Dict[str, Any]: ...

class ConversionError(ValueError):
    proposal: Optional[str]
    def __init__(self, message: str, proposal: Optional[str]) -> None: ...

@dataclass(frozen=True)
class Conversion:
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
    map: Optional[SpecPath] = ...,
    force: bool = ...,
) -> Conversion: ...

class Model:
    def __init__(
        self,
        spec: SpecPath,
        weights: SpecPath,
        device: str = ...,
        precision: str = ...,
        output_layer: Optional[str] = ...,
    ) -> None: ...
    @property
    def outputs(self) -> Tuple[str, ...]: ...
    @property
    def input_shape(self) -> Tuple[int, ...]: ...
    @property
    def output_shape(self) -> Tuple[int, ...]: ...
    @property
    def device(self) -> str: ...
    def predict(self, x: npt.NDArray[np.float32], batch_size: int = ...) -> npt.NDArray[np.float32]: ...
    def predict_large(
        self, x: npt.NDArray[np.float32], batch_size: int = ...
    ) -> npt.NDArray[np.float32]: ...
