//! The `unet` template: builds the classic U-Net layer by layer, in the order Keras code
//! creates the layers (so auto-names match), with skip crops computed from the shapes.

use super::{Context, Expander};
use crate::ast::Call;
use crate::diag::{Diagnostic, Span};

use crate::ir::value::{ArgValue, Value};

/// Template settings after validation.
struct Settings {
    input: Option<Value>,
    /// 2: images (`conv2d`, ...); 3: volumes (`conv3d`, ...).
    dims: i64,
    depth: i64,
    filters: i64,
    convs: i64,
    conv: Vec<(String, Value)>,
    batch_norm: bool,
    dropout: Option<(f64, Vec<i64>)>,
    upsample: bool,
    up_kwargs: Vec<(String, Value)>,
    crop_auto: bool,
    skip_first: bool,
    concat_axis: i64,
    head_classes: i64,
    head_activation: String,
    head_layer: bool,
    head_convs: Vec<i64>,
    head_kwargs: Vec<(String, Value)>,
}

const KNOWN: &[&str] = &[
    "input",
    "dims",
    "depth",
    "filters",
    "convs",
    "conv",
    "batch_norm",
    "dropout",
    "up",
    "skip",
    "head",
];

impl<'s> Expander<'_> {
    pub(super) fn template(
        &mut self,
        cx: &mut Context<'s>,
        call: &Call,
        args: Vec<ArgValue>,
        input: Option<Value>,
    ) -> Option<Value> {
        let span = call.span;
        let s = self.template_settings(args, span)?;
        let kinds = Kinds::of(s.dims);
        // A size for every spatial axis: `(2, 2)` or `(2, 2, 2)`.
        let per_axis = |v: i64| Value::List(vec![Value::Int(v); s.dims as usize]);
        let kw = |name: &str, value: Value| ArgValue {
            name: Some(name.to_string()),
            value,
            span,
            name_span: None,
        };
        let pos = |value: Value| ArgValue {
            name: None,
            value,
            span,
            name_span: None,
        };
        let with = |mut base: Vec<ArgValue>, extra: &[(String, Value)]| {
            for (k, v) in extra {
                base.retain(|a| a.name.as_deref() != Some(k));
                base.push(kw(k, v.clone()));
            }
            base
        };

        // The input: a shape creates the input layer; otherwise the incoming tensor.
        let mut x: Value = match s.input.clone() {
            Some(shape) => Value::Tensor(self.add_layer(
                cx,
                "input",
                vec![kw("shape", shape)],
                vec![],
                span,
                span,
            )?),
            None => match input {
                Some(v) => v,
                None => {
                    self.error(
                        Diagnostic::error(
                            "E-no-input",
                            "`unet` needs `input: HxWxC` or an incoming tensor",
                        )
                        .at(span, "no input")
                        .help("for example `unet(input: 572x572x1, depth: 4)`"),
                    );
                    return None;
                }
            },
        };

        let conv_block = |this: &mut Self, cx: &Context<'s>, x: Value, f: i64| -> Option<Value> {
            let mut x = x;
            for _ in 0..s.convs {
                x = this.conv(cx, &s, x, f, span, &kw, &pos)?;
            }
            Some(x)
        };

        let mut skips: Vec<Value> = Vec::new();
        for level in 0..=s.depth {
            let f = s.filters << level;
            x = conv_block(self, cx, x, f)?;
            if let Some((rate, levels)) = &s.dropout {
                if levels.contains(&level) {
                    x = self.layer(cx, "dropout", vec![pos(Value::Float(*rate))], x, span)?;
                }
            }
            if level < s.depth {
                skips.push(x.clone());
                x = self.layer(
                    cx,
                    kinds.max_pooling,
                    vec![kw("pool_size", per_axis(2))],
                    x,
                    span,
                )?;
            }
        }
        for level in (0..s.depth).rev() {
            let f = s.filters << level;
            let up = if s.upsample {
                let up = self.layer(
                    cx,
                    kinds.up_sampling,
                    vec![kw("size", per_axis(2))],
                    x,
                    span,
                )?;
                // Like the transposed conv, the up conv takes none of `conv`'s settings: only
                // what `up: {...}` gives it (README, "The unet template").
                let args = vec![
                    pos(Value::Int(f)),
                    pos(Value::Int(2)),
                    kw("padding", Value::Str("same".into())),
                ];
                self.layer(cx, kinds.conv, with(args, &s.up_kwargs), up, span)?
            } else {
                let args = vec![
                    pos(Value::Int(f)),
                    pos(Value::Int(2)),
                    kw("strides", Value::Int(2)),
                ];
                self.layer(cx, kinds.conv_transpose, with(args, &s.up_kwargs), x, span)?
            };
            let mut skip = skips[level as usize].clone();
            if s.crop_auto {
                if let (Some(a), Some(b)) = (self.value_shape(&skip), self.value_shape(&up)) {
                    let axes = (s.dims as usize).min(a.len()).min(b.len());
                    let (a, b) = (&a[..axes], &b[..axes]);
                    if a != b {
                        if a.iter().zip(b).all(|(x, y)| x >= y) {
                            let crop = crop_arg(a, b);
                            skip = self.layer(cx, kinds.cropping, vec![pos(crop)], skip, span)?;
                        } else {
                            let dims = |v: &[i64]| {
                                v.iter().map(i64::to_string).collect::<Vec<_>>().join("x")
                            };
                            self.error(
                                Diagnostic::error(
                                    "E-concat-shape",
                                    format!("`unet` level {level}: the skip is {} but the up path is {}, larger than the skip; it cannot be cropped to fit", dims(a), dims(b)),
                                )
                                .at(span, "in this template")
                                .help("choose an input size from `unetc sizes`"),
                            );
                            return None;
                        }
                    }
                }
            }
            let pair = if s.skip_first {
                vec![skip, up]
            } else {
                vec![up, skip]
            };
            x = self.layer(
                cx,
                "concatenate",
                vec![kw("axis", Value::Int(s.concat_axis))],
                Value::List(pair),
                span,
            )?;
            x = conv_block(self, cx, x, f)?;
        }
        for &n in &s.head_convs {
            x = self.conv(cx, &s, x, n, span, &kw, &pos)?;
        }
        let head_activation = if s.head_layer {
            "linear".to_string()
        } else {
            s.head_activation.clone()
        };
        let args = vec![
            pos(Value::Int(s.head_classes)),
            pos(Value::Int(1)),
            kw("activation", Value::Str(head_activation)),
        ];
        x = self.layer(cx, kinds.conv, with(args, &s.head_kwargs), x, span)?;
        if s.head_layer {
            x = match s.head_activation.as_str() {
                "softmax" => self.layer(cx, "softmax", vec![], x, span)?,
                "linear" => x,
                act => self.layer(
                    cx,
                    "activation",
                    vec![pos(Value::Str(act.to_string()))],
                    x,
                    span,
                )?,
            };
        }
        Some(x)
    }

    /// One convolution of the template: with batch norm, conv -> batch_normalization -> activation.
    #[allow(clippy::too_many_arguments)]
    fn conv(
        &mut self,
        cx: &Context<'s>,
        s: &Settings,
        x: Value,
        filters: i64,
        span: Span,
        kw: &dyn Fn(&str, Value) -> ArgValue,
        pos: &dyn Fn(Value) -> ArgValue,
    ) -> Option<Value> {
        let activation = s
            .conv
            .iter()
            .find(|(k, _)| k == "activation")
            .map(|(_, v)| v.clone())
            .unwrap_or(Value::Str("relu".into()));
        let mut args = vec![pos(Value::Int(filters))];
        for (k, v) in &s.conv {
            if !(s.batch_norm && k == "activation") {
                args.push(kw(k, v.clone()));
            }
        }
        let x = self.layer(cx, Kinds::of(s.dims).conv, args, x, span)?;
        if !s.batch_norm {
            return Some(x);
        }
        let x = self.layer(cx, "batch_normalization", vec![], x, span)?;
        self.layer(cx, "activation", vec![pos(activation)], x, span)
    }

    fn layer(
        &mut self,
        cx: &Context<'s>,
        kind: &str,
        args: Vec<ArgValue>,
        input: Value,
        span: Span,
    ) -> Option<Value> {
        self.add_layer(cx, kind, args, vec![input], span, span)
            .map(Value::Tensor)
    }

    fn value_shape(&mut self, v: &Value) -> Option<Vec<i64>> {
        match v {
            Value::Tensor(id) => self.shape_of(*id),
            _ => None,
        }
    }

    fn template_settings(&mut self, args: Vec<ArgValue>, span: Span) -> Option<Settings> {
        let mut s = Settings {
            input: None,
            dims: 2,
            depth: 4,
            filters: 64,
            convs: 2,
            conv: vec![
                ("kernel_size".into(), Value::Int(3)),
                ("padding".into(), Value::Str("same".into())),
                ("activation".into(), Value::Str("relu".into())),
            ],
            batch_norm: false,
            dropout: None,
            upsample: false,
            up_kwargs: Vec::new(),
            crop_auto: true,
            skip_first: true,
            concat_axis: -1,
            head_classes: 2,
            head_activation: "softmax".into(),
            head_layer: false,
            head_convs: Vec::new(),
            head_kwargs: Vec::new(),
        };
        let mut ok = true;
        for arg in args {
            let Some(name) = arg.name.clone() else {
                self.error(
                    Diagnostic::error("E-arg-type", "`unet` takes keyword arguments only")
                        .at(arg.span, "positional argument")
                        .help("e.g. `unet(input: 572x572x1, depth: 4)`"),
                );
                ok = false;
                continue;
            };
            let at = arg.span;
            let mut bad = |this: &mut Self, what: &str| {
                this.error(
                    Diagnostic::error(
                        "E-arg-type",
                        format!(
                            "`unet` argument `{name}` must be {what}, found `{}`",
                            arg.value
                        ),
                    )
                    .at(at, format!("expected {what}")),
                );
                ok = false;
            };
            match (name.as_str(), &arg.value) {
                ("input", v @ Value::List(_)) => s.input = Some(v.clone()),
                ("dims", Value::Int(d)) if (2..=3).contains(d) => s.dims = *d,
                ("dims", _) => bad(self, "2 (images) or 3 (volumes)"),
                ("depth", Value::Int(d)) if (1..=12).contains(d) => s.depth = *d,
                ("depth", _) => bad(self, "an integer in 1..=12"),
                ("filters", Value::Int(f)) if (1..=1 << 16).contains(f) => s.filters = *f,
                ("filters", _) => bad(self, "an integer in 1..=65536"),
                ("convs", Value::Int(n)) if (1..=8).contains(n) => s.convs = *n,
                ("convs", _) => bad(self, "an integer in 1..=8"),
                ("conv", Value::Map(entries)) => {
                    for (k, v) in entries {
                        s.conv.retain(|(key, _)| key != k);
                        s.conv.push((k.clone(), v.clone()));
                    }
                }
                ("batch_norm", Value::Bool(b)) => s.batch_norm = *b,
                ("dropout", Value::None) => s.dropout = None,
                ("dropout", Value::Float(r)) if (0.0..1.0).contains(r) => {
                    s.dropout = Some((*r, vec![]))
                }
                ("dropout", Value::Map(entries)) => {
                    let rate =
                        entries
                            .iter()
                            .find(|(k, _)| k == "rate")
                            .and_then(|(_, v)| match v {
                                Value::Float(r) if (0.0..1.0).contains(r) => Some(*r),
                                Value::Int(0) => Some(0.0),
                                _ => None,
                            });
                    let levels =
                        entries
                            .iter()
                            .find(|(k, _)| k == "levels")
                            .map(|(_, v)| match v {
                                Value::List(items) => items
                                    .iter()
                                    .map(|i| {
                                        if let Value::Int(i) = i {
                                            Some(*i)
                                        } else {
                                            None
                                        }
                                    })
                                    .collect::<Option<Vec<i64>>>(),
                                _ => None,
                            });
                    match (rate, levels) {
                        (Some(r), None) => s.dropout = Some((r, vec![])),
                        (Some(r), Some(Some(l))) => s.dropout = Some((r, l)),
                        _ => bad(self, "`{rate: 0.5, levels: [3, 4]}`"),
                    }
                }
                ("dropout", _) => bad(self, "a rate in [0, 1) or `{rate: 0.5, levels: [3, 4]}`"),
                ("up", Value::Str(mode)) => match mode.as_str() {
                    "transpose" => s.upsample = false,
                    "upsample" => s.upsample = true,
                    _ => bad(self, "`transpose` or `upsample`"),
                },
                ("up", Value::Map(entries)) => {
                    for (k, v) in entries {
                        match (k.as_str(), v) {
                            ("mode", Value::Str(m)) if m == "transpose" => s.upsample = false,
                            ("mode", Value::Str(m)) if m == "upsample" => s.upsample = true,
                            ("mode", _) => bad(self, "`{mode: transpose|upsample, ...}`"),
                            _ => s.up_kwargs.push((k.clone(), v.clone())),
                        }
                    }
                }
                ("skip", Value::Map(entries)) => {
                    for (k, v) in entries {
                        match (k.as_str(), v) {
                            ("crop", Value::Str(c)) if c == "auto" => s.crop_auto = true,
                            ("crop", Value::Str(c)) if c == "none" => s.crop_auto = false,
                            ("crop", Value::None) => s.crop_auto = false,
                            ("order", Value::Str(o)) if o == "skip_first" => s.skip_first = true,
                            ("order", Value::Str(o)) if o == "up_first" => s.skip_first = false,
                            ("axis", Value::Int(a)) if *a == -1 || *a == 3 || *a == 4 => {
                                s.concat_axis = *a
                            }
                            _ => bad(
                                self,
                                "`{crop: auto|none, order: skip_first|up_first, axis: -1|3|4}`",
                            ),
                        }
                    }
                }
                ("head", Value::Map(entries)) => {
                    for (k, v) in entries {
                        match (k.as_str(), v) {
                            ("classes", Value::Int(c)) if (1..=1 << 16).contains(c) => {
                                s.head_classes = *c
                            }
                            ("activation", Value::Str(a)) => s.head_activation = a.clone(),
                            ("activation", Value::None) => s.head_activation = "linear".into(),
                            ("layer", Value::Bool(b)) => s.head_layer = *b,
                            ("convs", Value::List(items)) => {
                                for i in items {
                                    match i {
                                        Value::Int(n) if (1..=1 << 16).contains(n) => {
                                            s.head_convs.push(*n)
                                        }
                                        _ => bad(self, "a list of filter counts in `head.convs`"),
                                    }
                                }
                            }
                            ("classes" | "layer" | "convs", _) => bad(
                                self,
                                "`{classes: 2, activation: softmax, layer: false, convs: []}`",
                            ),
                            _ => s.head_kwargs.push((k.clone(), v.clone())),
                        }
                    }
                }
                (other, _) if KNOWN.contains(&other) => bad(
                    self,
                    "a different kind of value (see the `unet` template reference)",
                ),
                (other, _) => {
                    let mut d = Diagnostic::error(
                        "E-arg-unknown",
                        format!("`unet` has no argument `{other}`"),
                    )
                    .at(arg.name_span.unwrap_or(at), "unknown argument");
                    if let Some(h) = crate::suggest::closest(other, KNOWN.iter().copied()) {
                        d = d.help(format!("did you mean `{h}`?"));
                    } else {
                        d = d.help(format!("`unet` takes: {}", KNOWN.join(", ")));
                    }
                    self.error(d);
                    ok = false;
                }
            }
        }
        // The channel axis of the skip concatenation: 3 for images, 4 for volumes.
        if s.concat_axis > 0 && s.concat_axis != s.dims + 1 {
            self.error(
                Diagnostic::error(
                    "E-arg-value",
                    format!(
                        "`unet` skip axis {} is not the channel axis of {}-D data ({})",
                        s.concat_axis,
                        s.dims,
                        s.dims + 1
                    ),
                )
                .at(span, "in this template")
                .help(format!("use `axis: -1` or `axis: {}`", s.dims + 1)),
            );
            ok = false;
        }
        if let Some(Value::List(sizes)) = &s.input {
            if sizes.len() as i64 != s.dims + 1 {
                let (what, fix) = if sizes.len() == 4 {
                    ("D x H x W x C, a volume", "write `dims: 3`")
                } else {
                    (
                        "H x W x C, an image",
                        "write `dims: 2` (the default) or a D x H x W x C input",
                    )
                };
                self.error(
                    Diagnostic::error(
                        "E-arg-value",
                        format!(
                            "`unet` input has {} sizes ({what}) but `dims` is {}",
                            sizes.len(),
                            s.dims
                        ),
                    )
                    .at(span, "in this template")
                    .help(fix),
                );
                ok = false;
            }
        }
        if let Some((_, levels)) = &mut s.dropout {
            if levels.is_empty() {
                // zhixuhao-style: after the two deepest levels.
                *levels = vec![s.depth - 1, s.depth];
            }
        }
        if (s.filters << s.depth) > crate::ir::value::MAX_DIM {
            self.error(
                Diagnostic::error(
                    "E-limit",
                    format!(
                        "`unet` with {} filters at depth {} needs {} filters at the bottom",
                        s.filters,
                        s.depth,
                        s.filters << s.depth
                    ),
                )
                .at(span, "too large"),
            );
            ok = false;
        }
        ok.then_some(s)
    }
}

/// The layer kinds of the template for 2-D (images) or 3-D (volumes) data.
struct Kinds {
    conv: &'static str,
    conv_transpose: &'static str,
    max_pooling: &'static str,
    up_sampling: &'static str,
    cropping: &'static str,
}

impl Kinds {
    fn of(dims: i64) -> Kinds {
        if dims == 3 {
            Kinds {
                conv: "conv3d",
                conv_transpose: "conv3d_transpose",
                max_pooling: "max_pooling3d",
                up_sampling: "up_sampling3d",
                cropping: "cropping3d",
            }
        } else {
            Kinds {
                conv: "conv2d",
                conv_transpose: "conv2d_transpose",
                max_pooling: "max_pooling2d",
                up_sampling: "up_sampling2d",
                cropping: "cropping2d",
            }
        }
    }
}

/// Keras's cropping argument value for a centred crop of `size` to `target` per spatial axis
/// (the odd pixel after): `((t, b), (l, r))`, or three pairs for a volume.
pub(super) fn crop_arg(size: &[i64], target: &[i64]) -> Value {
    Value::List(
        size.iter()
            .zip(target)
            .map(|(&n, &t)| {
                let d = n - t;
                Value::List(vec![Value::Int(d / 2), Value::Int(d - d / 2)])
            })
            .collect(),
    )
}
