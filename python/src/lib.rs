//! `unetc._unetc`: the Rust side of the Python package. Each function calls the same library
//! function the CLI calls and hands back its result (JSON text for reports, arrays for
//! predictions); `unetc/__init__.py` wraps them in typed Python objects.

use numpy::ndarray::{ArrayD, IxDyn};
use numpy::{IntoPyArray, PyArrayDyn, PyArrayMethods, PyUntypedArrayMethods};
use pyo3::create_exception;
use pyo3::exceptions::{PyFileNotFoundError, PyOSError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use unetc::exec::{Precision, Tensor};
use unetc::expand::Session;
use unetc::io::IoError;
use unetc::report::sizes::SizesSpecError;
use unetc::report::summary::SummaryStyle;
use unetc::runner::{Device, Loaded, RunError};

create_exception!(
    _unetc,
    SpecFailure,
    PyValueError,
    "The spec has errors; args[0] is the rendered diagnostics."
);
create_exception!(
    _unetc,
    ConversionFailure,
    PyValueError,
    "The weights could not be converted; args: (message, proposed map text or None)."
);
create_exception!(
    _unetc,
    InternalError,
    PyRuntimeError,
    "A bug in unetc (a panic); please report it with the input that caused it."
);

/// A panic is a bug: it becomes an exception instead of aborting the interpreter. The code
/// under it is written not to panic; this is the last guard.
fn guarded<T>(f: impl FnOnce() -> PyResult<T>) -> PyResult<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(InternalError::new_err(format!("unetc panicked: {what}")))
        }
    }
}

fn io_error(e: std::io::Error, what: String) -> PyErr {
    if e.kind() == std::io::ErrorKind::NotFound {
        PyFileNotFoundError::new_err(format!("{what}: {e}"))
    } else {
        PyOSError::new_err(format!("{what}: {e}"))
    }
}

fn run_error(e: RunError) -> PyErr {
    match e {
        RunError::Spec(text) => SpecFailure::new_err(text),
        RunError::Io(IoError::Os { path, what, source }) => {
            io_error(source, format!("{}: {what}", path.display()))
        }
        RunError::Io(e) => PyValueError::new_err(e.to_string()),
        RunError::Input { error, .. } => run_error(*error),
        e @ (RunError::Exec(_) | RunError::Usage(_) | RunError::SomeFailed { .. }) => {
            PyValueError::new_err(e.to_string())
        }
    }
}

fn sizes_error(e: SizesSpecError) -> PyErr {
    match e {
        SizesSpecError::Read(m) => PyOSError::new_err(m),
        SizesSpecError::Spec(text) => SpecFailure::new_err(text),
        SizesSpecError::NoAnswer(m) => PyValueError::new_err(m),
    }
}

fn json_text(value: &serde_json::Value) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".into())
}

/// Compiles a spec file (`path`) or spec text (`text`, in `format`), as `unetc check` does.
/// Returns (check JSON, summary text as `unetc check` prints it, rendered diagnostics).
#[pyfunction]
#[pyo3(signature = (path, text, format, style, input_shape, line_length))]
fn check(
    path: Option<PathBuf>,
    text: Option<String>,
    format: Option<&str>,
    style: &str,
    input_shape: Option<Vec<i64>>,
    line_length: Option<usize>,
) -> PyResult<(String, String, String)> {
    guarded(|| {
        let style = match style {
            "legacy" => SummaryStyle::Legacy,
            "tf-keras" => SummaryStyle::TfKeras,
            other => {
                return Err(PyValueError::new_err(format!(
                    "style={other:?}: use \"legacy\" or \"tf-keras\""
                )))
            }
        };
        let format = match format {
            None => None,
            Some("dsl" | "unet") => Some(unetc::front::Format::Dsl),
            Some("yaml" | "yml") => Some(unetc::front::Format::Yaml),
            Some(other) => {
                return Err(PyValueError::new_err(format!(
                    "format={other:?}: use \"dsl\" or \"yaml\" (None: from the file's extension, \
                     the DSL for text)"
                )))
            }
        };
        if let Some(n) = line_length {
            if !(40..=1000).contains(&n) {
                return Err(PyValueError::new_err(format!(
                    "line_length={n}: use 40 to 1000"
                )));
            }
        }
        let options = unetc::Options {
            input_shape,
            output_layer: None,
        };
        let mut session = Session::new();
        let compiled = match (path, text) {
            (Some(path), None) => {
                let c = match format {
                    Some(f) => {
                        let t = std::fs::read_to_string(&path).map_err(|e| {
                            io_error(e, format!("cannot read `{}`", path.display()))
                        })?;
                        unetc::compile_source_as(&path, f, t, &options, &mut session)
                    }
                    None => unetc::compile_file(&path, &options, &mut session)
                        .map_err(|e| io_error(e, format!("cannot read `{}`", path.display())))?,
                };
                c
            }
            (None, Some(text)) => unetc::compile_source_as(
                Path::new("<string>"),
                format.unwrap_or(unetc::front::Format::Dsl),
                text,
                &options,
                &mut session,
            ),
            _ => return Err(PyTypeError::new_err("give a spec path or spec text")),
        };
        let json = json_text(&unetc::report::json::check_json(&compiled));
        let summary = unetc::report::check_text(&compiled, style, line_length);
        let diags = unetc::diag::render_plain(&compiled.sources, &compiled.diags);
        Ok((json, summary, diags))
    })
}

/// `unetc sizes SPEC --format json`.
#[pyfunction]
#[pyo3(signature = (path, near, max))]
fn sizes(path: PathBuf, near: Option<usize>, max: usize) -> PyResult<String> {
    guarded(|| {
        if !(1..=16384).contains(&max) {
            return Err(PyValueError::new_err(format!("max={max}: use 1 to 16384")));
        }
        if let Some(v) = unetc::report::volume::read_volume_spec(&path).map_err(sizes_error)? {
            return Ok(json_text(&unetc::report::json::volume_sizes_json(
                &path, &v.text, v.base, max, near,
            )));
        }
        let s = unetc::report::sizes::read_sizes_spec(&path).map_err(sizes_error)?;
        Ok(json_text(&unetc::report::json::sizes_json(
            &path,
            &s.text,
            &s.compiled,
            s.base,
            max,
            near,
        )))
    })
}

/// `unetc tiles SPEC --image WxH --memory M --format json`, the image given in array order:
/// (height, width), or (depth, height, width) for a volume model (`--image DxHxW`).
#[pyfunction]
#[pyo3(signature = (path, image, memory, max))]
fn tiles(path: PathBuf, image: Vec<usize>, memory: &str, max: usize) -> PyResult<String> {
    guarded(|| {
        let names: &[&str] = match image.len() {
            2 => &["height", "width"],
            3 => &["depth", "height", "width"],
            n => {
                return Err(PyValueError::new_err(format!(
                    "image has {n} sizes: give (height, width), or (depth, height, width) for a \
                     volume model"
                )))
            }
        };
        for (name, &n) in names.iter().zip(&image) {
            if n == 0 || n > 1 << 20 {
                return Err(PyValueError::new_err(format!(
                    "image {name} {n}: sizes must be in 1..=1048576"
                )));
            }
        }
        if !(1..=16384).contains(&max) {
            return Err(PyValueError::new_err(format!("max={max}: use 1 to 16384")));
        }
        let budget = unetc::text::parse_bytes(memory).ok_or_else(|| {
            PyValueError::new_err(format!(
                "memory={memory:?}: expected a byte count or a size like \"8GiB\" or \"512MiB\""
            ))
        })?;
        let mut request = unetc::report::sizes::TileRequest::new(budget);
        request.max_side = max;
        let volume = unetc::report::volume::read_volume_spec(&path).map_err(sizes_error)?;
        let (height, width) = match (volume, &image[..]) {
            (Some(v), &[d, h, w]) => {
                let plan =
                    unetc::report::volume::plan_volume(&path, &v.text, v.base, [d, h, w], &request)
                        .map_err(PyValueError::new_err)?;
                return Ok(json_text(&unetc::report::json::volume_tiles_json(
                    &path,
                    [d, h, w],
                    budget,
                    &plan,
                )));
            }
            (Some(v), _) => {
                return Err(PyValueError::new_err(format!(
                    "image={image:?}: this is a volume model (input {}x{}x{} x {} channels, D x \
                     H x W); give image=(depth, height, width)",
                    v.base[0], v.base[1], v.base[2], v.base[3]
                )))
            }
            (None, &[h, w]) => (h, w),
            (None, _) => {
                return Err(PyValueError::new_err(format!(
                    "image={image:?}: this model takes images; give image=(height, width)"
                )))
            }
        };
        let s = unetc::report::sizes::read_sizes_spec(&path).map_err(sizes_error)?;
        let plan =
            unetc::report::sizes::plan_image(&path, &s.text, s.base, (height, width), &request)
                .map_err(PyValueError::new_err)?;
        Ok(json_text(&unetc::report::json::tiles_json(
            &path,
            (height, width),
            budget,
            &plan,
        )))
    })
}

/// A spec compiled and its weights bound once.
#[pyclass(frozen, module = "unetc._unetc")]
struct Model {
    loaded: Loaded,
}

/// The dimensions as Python writes a shape: `(N, 44, 44, 1)`.
fn shape_text(dims: &[String]) -> String {
    if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    }
}

impl Model {
    /// `x` as a batch tensor: float32, `want.len()` dimensions (one item) or one more (a batch).
    /// `exact`: the item dimensions must be the model's (else only the channels are checked
    /// here; the runner checks the rest).
    fn to_tensor(&self, x: &Bound<'_, PyAny>, exact: bool) -> PyResult<(Tensor, bool)> {
        let want = self.loaded.input_shape();
        let item: Vec<String> = want.iter().map(usize::to_string).collect();
        let mut batch = vec!["N".to_string()];
        batch.extend(item.iter().cloned());
        let expected = format!(
            "a float32 array of shape {} (a batch, channels last) or {} (one item)",
            shape_text(&batch),
            shape_text(&item)
        );
        let Ok(array) = x.downcast::<PyArrayDyn<f32>>() else {
            if let Ok(untyped) = x.downcast::<numpy::PyUntypedArray>() {
                return Err(PyValueError::new_err(format!(
                    "the input's dtype is {}; the model takes {expected}: convert it with \
                     x.astype(numpy.float32)",
                    untyped.dtype()
                )));
            }
            return Err(PyTypeError::new_err(format!(
                "the input is a {}, not a numpy array; the model takes {expected}",
                x.get_type().name()?
            )));
        };
        let shape = array.shape().to_vec();
        let single = shape.len() == want.len();
        let fits = if exact {
            shape.len() >= want.len() && shape[shape.len() - want.len()..] == want[..]
        } else {
            shape.len() >= want.len() && shape.last() == want.last()
        };
        if !(single || shape.len() == want.len() + 1) || !fits || shape.contains(&0) {
            let hint = if exact {
                "; for images of other sizes use predict_large"
            } else {
                ""
            };
            return Err(PyValueError::new_err(format!(
                "the input has shape {}; the model takes {expected}{hint}",
                shape_text(&shape.iter().map(usize::to_string).collect::<Vec<_>>())
            )));
        }
        let readonly = array
            .try_readonly()
            .map_err(|e| PyValueError::new_err(format!("the input array cannot be read: {e}")))?;
        // A C-ordered array is copied as one block; any other layout (Fortran order, strided
        // views) element by element in row-major order. (`as_slice` also takes Fortran order.)
        let data = match readonly.as_slice() {
            Ok(s) if array.is_c_contiguous() => s.to_vec(),
            _ => readonly.as_array().iter().copied().collect(),
        };
        let mut dims = shape;
        if single {
            dims.insert(0, 1);
        }
        Ok((Tensor { shape: dims, data }, single))
    }

    fn run(
        &self,
        py: Python<'_>,
        x: &Bound<'_, PyAny>,
        batch_size: usize,
        exact: bool,
    ) -> PyResult<Py<PyAny>> {
        if batch_size == 0 || batch_size > 4096 {
            return Err(PyValueError::new_err(format!(
                "batch_size={batch_size}: use 1 to 4096"
            )));
        }
        let (tensor, single) = self.to_tensor(x, exact)?;
        let loaded = &self.loaded;
        let out = py.allow_threads(|| {
            guarded(|| {
                let r = if exact {
                    loaded.predict(&tensor, batch_size)
                } else {
                    loaded.predict_large(&tensor, batch_size).map(|(t, _)| t)
                };
                r.map_err(run_error)
            })
        })?;
        let mut shape = out.shape;
        if single && shape.first() == Some(&1) {
            shape.remove(0);
        }
        let array = ArrayD::from_shape_vec(IxDyn(&shape), out.data).map_err(|e| {
            InternalError::new_err(format!("the output does not fit its shape: {e}"))
        })?;
        Ok(array.into_pyarray(py).into_any().unbind())
    }
}

#[pymethods]
impl Model {
    #[new]
    #[pyo3(signature = (spec, weights, device = "cpu", precision = "f32", output_layer = None))]
    fn new(
        py: Python<'_>,
        spec: PathBuf,
        weights: PathBuf,
        device: &str,
        precision: &str,
        output_layer: Option<String>,
    ) -> PyResult<Model> {
        let device = match device {
            "cpu" => Device::Cpu,
            "cuda" | "gpu" => {
                if let Err(why) = unetc::exec::cuda::cuda_available() {
                    return Err(PyRuntimeError::new_err(format!(
                        "device=\"cuda\": no usable CUDA GPU ({why}); use device=\"cpu\""
                    )));
                }
                Device::Cuda
            }
            "auto" => Device::Auto,
            other => {
                return Err(PyValueError::new_err(format!(
                    "device={other:?}: use \"cpu\", \"cuda\" or \"auto\""
                )))
            }
        };
        let precision: Precision = precision
            .parse()
            .map_err(|e| PyValueError::new_err(format!("precision={precision:?}: {e}")))?;
        let loaded = py.allow_threads(|| {
            guarded(|| {
                Loaded::load(&spec, &weights, device, precision, output_layer.as_deref())
                    .map_err(run_error)
            })
        })?;
        Ok(Model { loaded })
    }

    /// The names of the spec's outputs, in its order.
    #[getter]
    fn outputs(&self) -> Vec<String> {
        self.loaded.spec_outputs().to_vec()
    }

    /// The input shape of one item (no batch axis).
    #[getter]
    fn input_shape(&self) -> Vec<usize> {
        self.loaded.input_shape()
    }

    /// The output shape of one item (no batch axis).
    #[getter]
    fn output_shape(&self) -> PyResult<Vec<usize>> {
        self.loaded.output_shape().map_err(run_error)
    }

    /// "cpu" or "cuda".
    #[getter]
    fn device(&self) -> &'static str {
        self.loaded.device()
    }

    #[pyo3(signature = (x, batch_size = 1))]
    fn predict(
        &self,
        py: Python<'_>,
        x: &Bound<'_, PyAny>,
        batch_size: usize,
    ) -> PyResult<Py<PyAny>> {
        self.run(py, x, batch_size, true)
    }

    #[pyo3(signature = (x, batch_size = 1))]
    fn predict_large(
        &self,
        py: Python<'_>,
        x: &Bound<'_, PyAny>,
        batch_size: usize,
    ) -> PyResult<Py<PyAny>> {
        self.run(py, x, batch_size, false)
    }
}

/// `unetc convert-weights SPEC STATE_DICT --from pytorch [--map MAP] -o OUTPUT [--force]`:
/// writes `output` and returns JSON (tensors, modules bound, how they were bound, modules the
/// map left unused, layers only the module order placed).
#[pyfunction]
#[pyo3(signature = (spec, state_dict, output, map, force))]
fn convert_weights(
    spec: PathBuf,
    state_dict: PathBuf,
    output: PathBuf,
    map: Option<PathBuf>,
    force: bool,
) -> PyResult<String> {
    guarded(|| {
        let c = unetc::runner::compile_checked(&spec, None).map_err(run_error)?;
        if output.exists() && !force {
            return Err(PyValueError::new_err(format!(
                "`{}` exists; pass force=True to replace it",
                output.display()
            )));
        }
        let bytes =
            unetc::io::read_weights_file(&state_dict).map_err(|e| run_error(RunError::Io(e)))?;
        let map_text = match &map {
            Some(m) => Some(
                unetc::interop::pytorch::read_map_file(m)
                    .map_err(|e| io_error(e, format!("cannot read the map `{}`", m.display())))?,
            ),
            None => None,
        };
        let conv = unetc::interop::pytorch::convert_state_dict(&c, &bytes, map_text.as_deref())
            .map_err(|e| {
                ConversionFailure::new_err((
                    format!("{}: {}", state_dict.display(), e.message),
                    e.proposal,
                ))
            })?;
        unetc::io::save_weights(&output, &conv.weights, force)
            .map_err(|e| run_error(RunError::Io(e)))?;
        Ok(json_text(&serde_json::json!({
            "tensors": conv.weights.len(),
            "modules_bound": conv.modules - conv.ignored.len(),
            "binding": conv.binding.key(),
            "ignored": conv.ignored,
            "order_only": conv.order_only,
        })))
    })
}

#[pymodule]
fn _unetc(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(check, m)?)?;
    m.add_function(wrap_pyfunction!(sizes, m)?)?;
    m.add_function(wrap_pyfunction!(tiles, m)?)?;
    m.add_function(wrap_pyfunction!(convert_weights, m)?)?;
    m.add_class::<Model>()?;
    m.add("SpecFailure", m.py().get_type::<SpecFailure>())?;
    m.add("InternalError", m.py().get_type::<InternalError>())?;
    m.add("ConversionFailure", m.py().get_type::<ConversionFailure>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
