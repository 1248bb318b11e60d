//! `unetc diagram`: a self-contained SVG in the style of the U-Net paper's Figure 1 (feature maps
//! as boxes at their resolution level, contracting path down the left, expanding path up the
//! right, skip connections across, arrows coloured by operation), and Graphviz DOT.
//!
//! Layout: every "feature map" layer (a convolution, pooling, upsampling, merge, ...) is one box;
//! normalisation, activation and dropout layers fold into the box before them. Columns follow the
//! execution order; the row is the resolution level (pooling goes one down, upsampling one up),
//! so a U-Net comes out as a U and any other graph as a staircase of levels.

use crate::ir::ops::{MergeFn, TfCompute};
use crate::ir::{Graph, NodeId, Op};
use crate::Compiled;
use std::collections::HashMap;
use std::fmt::Write;

/// What an arrow means: the kind of the layer it leads into (or a skip connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Edge {
    Conv,
    Conv1x1,
    MaxPool,
    AveragePool,
    GlobalMaxPool,
    GlobalAveragePool,
    /// Multiply: an attention gate or a squeeze-and-excitation scale.
    Gate,
    Up,
    CopyCrop,
    Concat,
    Merge,
    Dense,
    Other,
}

impl Edge {
    /// Colour, legend text, and the class the arrow carries in the SVG.
    fn style(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Edge::Conv => ("#1f77b4", "conv", "conv"),
            Edge::Conv1x1 => ("#17becf", "conv 1x1", "conv-1x1"),
            Edge::MaxPool => ("#d62728", "max pool", "max-pool"),
            Edge::AveragePool => ("#ff9896", "average pool", "average-pool"),
            Edge::GlobalMaxPool => ("#c5b0d5", "global max pool", "global-max-pool"),
            Edge::GlobalAveragePool => ("#ff7f0e", "global average pool", "global-average-pool"),
            Edge::Gate => ("#bcbd22", "multiply (gate)", "multiply"),
            Edge::Up => ("#2ca02c", "up-conv / upsample", "up"),
            Edge::CopyCrop => ("#7f7f7f", "copy (and crop)", "copy"),
            Edge::Concat => ("#7f7f7f", "concatenate", "concatenate"),
            Edge::Merge => ("#9467bd", "add / merge", "merge"),
            Edge::Dense => ("#e377c2", "dense", "dense"),
            Edge::Other => ("#8c564b", "other", "other"),
        }
    }

    fn dash(self) -> &'static str {
        if self == Edge::CopyCrop {
            r#" stroke-dasharray="6 3""#
        } else {
            ""
        }
    }
}

/// Layers drawn inside the box of the layer before them.
fn folds(op: &Op) -> bool {
    match op {
        // An elementwise function folds as an activation layer does; merges get their own box.
        Op::TFOpLambda(op) => matches!(
            op.computes(),
            TfCompute::Activation(_) | TfCompute::Scalar(_) | TfCompute::TensorMerge(_)
        ),
        Op::BatchNormalization(_)
        | Op::Activation(_)
        | Op::ReLU(_)
        | Op::LeakyReLU(_)
        | Op::ELU(_)
        | Op::Rescaling(_)
        | Op::GELU(_)
        | Op::Snake(_)
        | Op::Normalization(_)
        | Op::PReLU(_)
        | Op::Softmax(_)
        | Op::Dropout(_)
        | Op::SpatialDropout2D(_)
        | Op::GaussianNoise(_)
        | Op::GaussianDropout(_)
        | Op::FixedDropout(_)
        | Op::GroupNormalization(_)
        | Op::LayerNormalization(_)
        | Op::Cropping2D(_)
        | Op::ZeroPadding2D(_)
        | Op::Cropping3D(_)
        | Op::ZeroPadding3D(_) => true,
        Op::Input(_)
        | Op::Conv3D(_)
        | Op::Conv3DTranspose(_)
        | Op::MaxPooling3D(_)
        | Op::AveragePooling3D(_)
        | Op::UpSampling3D(_)
        | Op::GlobalAveragePooling3D(_)
        | Op::Conv2D(_)
        | Op::DepthwiseConv2D(_)
        | Op::SeparableConv2D(_)
        | Op::Conv2DTranspose(_)
        | Op::MaxPooling2D(_)
        | Op::AveragePooling2D(_)
        | Op::UpSampling2D(_)
        | Op::Resizing(_)
        | Op::Concatenate(_)
        | Op::Add(_)
        | Op::Multiply(_)
        | Op::Subtract(_)
        | Op::CustomScaleLayer(_)
        | Op::Average(_)
        | Op::Maximum(_)
        | Op::Minimum(_)
        | Op::Flatten(_)
        | Op::Reshape(_)
        | Op::Lambda(_)
        | Op::Permute(_)
        | Op::Dense(_)
        | Op::MultiHeadAttention(_)
        | Op::PatchExtract(_)
        | Op::PatchEmbedding(_)
        | Op::SwinTransformerBlock(_)
        | Op::PatchMerging(_)
        | Op::PatchExpanding(_)
        | Op::GlobalAveragePooling2D(_)
        | Op::GlobalMaxPooling2D(_) => false,
    }
}

struct Box_ {
    node: NodeId,
    column: usize,
    level: i64,
    channels: i64,
    size: String,
    frozen: bool,
    /// Layers folded into this box (their names, for the tooltip).
    folded: Vec<String>,
}

/// For every node: the visible node whose box shows it, and whether a crop lies on the way.
fn representative(g: &Graph, order: &[NodeId]) -> HashMap<NodeId, (NodeId, bool)> {
    let mut rep: HashMap<NodeId, (NodeId, bool)> = HashMap::new();
    for &id in order {
        let node = g.node(id);
        let r = if folds(&node.op) && node.inputs.len() == 1 {
            let (r, cropped) = rep.get(&node.inputs[0]).copied().unwrap_or((id, false));
            (
                r,
                cropped || matches!(node.op, Op::Cropping2D(_) | Op::Cropping3D(_)),
            )
        } else {
            (id, false)
        };
        rep.insert(id, r);
    }
    rep
}

/// How many resolution levels a layer goes down (negative: up).
fn level_step(op: &Op) -> i64 {
    match op {
        Op::MaxPooling2D(p) => i64::from(p.strides[0] > 1),
        Op::AveragePooling2D(p) => i64::from(p.strides[0] > 1),
        Op::Conv2D(c) => i64::from(c.args.strides[0] > 1),
        Op::DepthwiseConv2D(c) => i64::from(c.depthwise.strides[0] > 1),
        Op::SeparableConv2D(c) => i64::from(c.depthwise.strides[0] > 1),
        Op::Conv2DTranspose(c) => -i64::from(c.args.strides[0] > 1),
        Op::UpSampling2D(u) => -i64::from(u.size[0] > 1),
        Op::MaxPooling3D(p) => i64::from(p.strides[1] > 1),
        Op::AveragePooling3D(p) => i64::from(p.strides[1] > 1),
        Op::Conv3D(c) => i64::from(c.args.strides[1] > 1),
        Op::Conv3DTranspose(c) => -i64::from(c.args.strides[1] > 1),
        Op::UpSampling3D(u) => -i64::from(u.size[1] > 1),
        // To a fixed size (preprocessing): no level of the U.
        Op::Input(_)
        | Op::Resizing(_)
        | Op::Cropping3D(_)
        | Op::ZeroPadding3D(_)
        | Op::GlobalAveragePooling3D(_)
        | Op::Cropping2D(_)
        | Op::ZeroPadding2D(_)
        | Op::Concatenate(_)
        | Op::Add(_)
        | Op::BatchNormalization(_)
        | Op::Activation(_)
        | Op::ReLU(_)
        | Op::Softmax(_)
        | Op::Dropout(_)
        | Op::Flatten(_)
        | Op::Reshape(_)
        | Op::Lambda(_)
        | Op::Permute(_)
        | Op::Dense(_)
        | Op::MultiHeadAttention(_)
        | Op::PatchExtract(_)
        | Op::PatchEmbedding(_)
        | Op::SwinTransformerBlock(_)
        | Op::PatchMerging(_)
        | Op::PatchExpanding(_)
        | Op::GlobalAveragePooling2D(_)
        | Op::GlobalMaxPooling2D(_)
        | Op::Multiply(_)
        | Op::Subtract(_)
        | Op::CustomScaleLayer(_)
        | Op::Average(_)
        | Op::Maximum(_)
        | Op::Minimum(_)
        | Op::TFOpLambda(_)
        | Op::LeakyReLU(_)
        | Op::ELU(_)
        | Op::Rescaling(_)
        | Op::GELU(_)
        | Op::Snake(_)
        | Op::Normalization(_)
        | Op::PReLU(_)
        | Op::SpatialDropout2D(_)
        | Op::GaussianNoise(_)
        | Op::GaussianDropout(_)
        | Op::FixedDropout(_)
        | Op::GroupNormalization(_)
        | Op::LayerNormalization(_) => 0,
    }
}

/// The arrow into a box shows the box's own layer: a strided convolution is a convolution
/// (it goes down a level because of its stride, not because it pools).
fn edge_kind(op: &Op, cropped: bool, skip: bool) -> Edge {
    if skip || cropped {
        return Edge::CopyCrop;
    }
    match op {
        Op::Conv2D(c) if c.args.kernel_size == [1, 1] => Edge::Conv1x1,
        Op::Conv3D(c) if c.args.kernel_size == [1, 1, 1] => Edge::Conv1x1,
        Op::Conv2D(_) | Op::DepthwiseConv2D(_) | Op::SeparableConv2D(_) | Op::Conv3D(_) => {
            Edge::Conv
        }
        Op::MaxPooling3D(_) => Edge::MaxPool,
        Op::AveragePooling3D(_) => Edge::AveragePool,
        Op::GlobalAveragePooling3D(_) => Edge::GlobalAveragePool,
        Op::Conv3DTranspose(_) | Op::UpSampling3D(_) => Edge::Up,
        Op::Dense(_) | Op::PatchEmbedding(_) | Op::PatchMerging(_) => Edge::Dense,
        Op::PatchExpanding(_) => Edge::Up,
        // Every token attends to every other: a merge of the whole input.
        Op::MultiHeadAttention(_) | Op::SwinTransformerBlock(_) => Edge::Merge,
        Op::MaxPooling2D(_) => Edge::MaxPool,
        Op::GlobalMaxPooling2D(_) => Edge::GlobalMaxPool,
        Op::AveragePooling2D(_) => Edge::AveragePool,
        Op::GlobalAveragePooling2D(_) => Edge::GlobalAveragePool,
        Op::Conv2DTranspose(_) | Op::UpSampling2D(_) => Edge::Up,
        Op::Resizing(_) => Edge::Other,
        Op::Add(_) => Edge::Merge,
        Op::Multiply(_) => Edge::Gate,
        Op::Subtract(_)
        | Op::Average(_)
        | Op::Maximum(_)
        | Op::Minimum(_)
        | Op::CustomScaleLayer(_) => Edge::Merge,
        Op::Concatenate(_) => Edge::Concat,
        Op::TFOpLambda(op) => match op.computes() {
            TfCompute::Merge(MergeFn::Multiply) => Edge::Gate,
            TfCompute::Merge(_) => Edge::Merge,
            // One tensor and a constant: no second arrow to draw.
            TfCompute::TensorMerge(_) => Edge::Other,
            TfCompute::Concat(_) => Edge::Concat,
            TfCompute::Resize(_) => Edge::Up,
            TfCompute::Activation(_)
            | TfCompute::Scalar(_)
            | TfCompute::ReduceChannels(_)
            | TfCompute::ReduceImage(_)
            | TfCompute::Reshape
            | TfCompute::Slice
            | TfCompute::Pad => Edge::Other,
        },
        // One-input layers in this group fold into the box before them and get no arrow.
        Op::Input(_)
        | Op::Flatten(_)
        | Op::Reshape(_)
        | Op::Lambda(_)
        | Op::Permute(_)
        | Op::PatchExtract(_)
        | Op::Cropping2D(_)
        | Op::ZeroPadding2D(_)
        | Op::Cropping3D(_)
        | Op::ZeroPadding3D(_)
        | Op::BatchNormalization(_)
        | Op::Activation(_)
        | Op::ReLU(_)
        | Op::Softmax(_)
        | Op::Dropout(_)
        | Op::LeakyReLU(_)
        | Op::ELU(_)
        | Op::Rescaling(_)
        | Op::GELU(_)
        | Op::Snake(_)
        | Op::Normalization(_)
        | Op::PReLU(_)
        | Op::SpatialDropout2D(_)
        | Op::GaussianNoise(_)
        | Op::GaussianDropout(_)
        | Op::FixedDropout(_)
        | Op::GroupNormalization(_)
        | Op::LayerNormalization(_) => Edge::Other,
    }
}

/// Boxes in execution order and the edges between them, `(from box, to box, kind)`.
fn boxes_and_edges(c: &Compiled) -> (Vec<Box_>, Vec<(usize, usize, Edge)>) {
    let g = &c.graph;
    let order = &c.info.schedule;
    let rep = representative(g, order);
    let mut boxes: Vec<Box_> = Vec::new();
    let mut index: HashMap<NodeId, usize> = HashMap::new();
    let mut level: HashMap<NodeId, i64> = HashMap::new();
    for &id in order {
        let node = g.node(id);
        let input_level = node
            .inputs
            .iter()
            .filter_map(|i| level.get(i))
            .copied()
            .max()
            .unwrap_or(0);
        let lv = input_level + level_step(&node.op);
        level.insert(id, lv);
        let (r, _) = rep[&id];
        if r != id {
            if let Some(&b) = index.get(&r) {
                boxes[b]
                    .folded
                    .push(format!("{} ({})", node.name, node.op.class_name()));
            }
            continue;
        }
        let shape = c.info.layers[id.index()].shape.clone().unwrap_or_default();
        let (size, channels) = match shape.as_slice() {
            [h, w, ch] => (
                if h == w {
                    format!("{h}²")
                } else {
                    format!("{h}×{w}")
                },
                *ch,
            ),
            [d, h, w, ch] => (
                if d == h && h == w {
                    format!("{d}³")
                } else {
                    format!("{d}×{h}×{w}")
                },
                *ch,
            ),
            [n] => (String::new(), *n),
            _ => (String::new(), 1),
        };
        index.insert(id, boxes.len());
        boxes.push(Box_ {
            node: id,
            column: boxes.len(),
            level: lv,
            channels,
            size,
            frozen: !node.trainable && !matches!(node.op, Op::Input(_)),
            folded: Vec::new(),
        });
    }
    let mut edges = Vec::new();
    for b in 0..boxes.len() {
        let id = boxes[b].node;
        let node = g.node(id);
        for &input in &node.inputs {
            let (r, cropped) = rep[&input];
            let Some(&from) = index.get(&r) else { continue };
            let skip = boxes[b].column > boxes[from].column + 1
                && boxes[from].level == boxes[b].level
                && matches!(node.op, Op::Concatenate(_));
            edges.push((from, b, edge_kind(&node.op, cropped, skip)));
        }
    }
    (boxes, edges)
}

/// How an arrow runs between two boxes. Every arrow is a chain of horizontal and vertical
/// segments that enters and leaves boxes only at their sides or bottom, never at the top
/// (where the channel count is printed) and never in the lower half of the left side (where
/// the spatial size is printed), and never passes through a box.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// Same level, no box of that level in between: one horizontal line.
    Straight,
    /// Same level with boxes of that level in between: up out of the gap after the source,
    /// along a track above the row, down in the gap before the target.
    OverRow,
    /// Down from the source's bottom, then right into the target's side.
    Down,
    /// As `Down`, but boxes of the target's level lie in between: along a track above the
    /// target's row and down in the gap before the target.
    DownViaTrack,
    /// Right out of the source's side, then up into the target's bottom.
    Up,
    /// As `Up`, but boxes of the source's level lie in between: up out of the gap after the
    /// source, along a track above the source's row, then up into the target's bottom.
    UpViaTrack,
}

impl Route {
    /// Whether the arrow arrives at its target's side down a vertical in the gap before it.
    fn arrives_by_leg(self) -> bool {
        matches!(self, Route::OverRow | Route::DownViaTrack)
    }

    /// Whether the arrow leaves its source's side up a vertical in the gap after it.
    fn leaves_by_leg(self) -> bool {
        matches!(self, Route::OverRow | Route::UpViaTrack)
    }
}

struct Arrow {
    from: usize,
    to: usize,
    kind: Edge,
    points: Vec<(f64, f64)>,
}

/// Everything's position, in SVG user units.
struct Layout {
    boxes: Vec<Box_>,
    arrows: Vec<Arrow>,
    x: Vec<f64>,
    w: Vec<f64>,
    /// Each box's row: its level − the smallest level.
    row: Vec<usize>,
    /// Top and height of each row.
    row_top: Vec<f64>,
    row_height: Vec<f64>,
    width: f64,
    height: f64,
}

const MARGIN: f64 = 40.0;
/// Space above a box for its channel count.
const LABEL_BAND: f64 = 12.0;
/// Vertical distance between arrows entering or leaving one side of a box.
const SLOT: f64 = 11.0;
/// Horizontal distance between verticals in one gap, and from a box to the first one.
const LEG: f64 = 7.0;
const LEG_FIRST: f64 = 5.0;
/// Room before a box for an arrowhead after the last vertical.
const HEAD_ROOM: f64 = 16.0;
/// Vertical distance between tracks above a row, and from the channel counts to the first.
const TRACK: f64 = 9.0;
const TRACK_FIRST: f64 = 6.0;
/// Arrowhead length; paths stop this much before the box edge where the tip lands.
const HEAD: f64 = 8.0;
const HEAD_INSET: f64 = 4.0;
/// Font sizes of the channel count and the spatial size, and a generous glyph width (em).
const CHANNEL_FONT: f64 = 9.0;
const SIZE_FONT: f64 = 8.0;
const GLYPH_EM: f64 = 0.62;

fn width_of(channels: i64) -> f64 {
    4.0 + 3.0 * ((channels.max(1) as f64).log2() + 1.0)
}

fn place(boxes: Vec<Box_>, edges: Vec<(usize, usize, Edge)>) -> Layout {
    use std::cmp::{Ordering, Reverse};
    let n = boxes.len();
    let min_level = boxes.iter().map(|b| b.level).min().unwrap_or(0);
    let row: Vec<usize> = boxes
        .iter()
        .map(|b| (b.level - min_level) as usize)
        .collect();
    let rows = row.iter().max().map_or(1, |r| r + 1);
    let mut columns_in_row = vec![Vec::new(); rows];
    for (b, bx) in boxes.iter().enumerate() {
        columns_in_row[row[b]].push(bx.column);
    }
    let blocked = |r: usize, a: usize, b: usize| columns_in_row[r].iter().any(|&c| a < c && c < b);
    let routes: Vec<Route> = edges
        .iter()
        .map(|&(f, t, _)| {
            let (cf, ct) = (boxes[f].column, boxes[t].column);
            match row[t].cmp(&row[f]) {
                Ordering::Equal if blocked(row[f], cf, ct) => Route::OverRow,
                Ordering::Equal => Route::Straight,
                Ordering::Greater if blocked(row[t], cf, ct) => Route::DownViaTrack,
                Ordering::Greater => Route::Down,
                Ordering::Less if blocked(row[f], cf, ct) => Route::UpViaTrack,
                Ordering::Less => Route::Up,
            }
        })
        .collect();

    // Tracks: the horizontal runs above each row. Overlapping runs get different tracks, and
    // a run that spans another runs above it, so nested skips (U-Net++) do not cross.
    let band = |e: usize| -> Option<usize> {
        let (f, t, _) = edges[e];
        match routes[e] {
            Route::OverRow | Route::UpViaTrack => Some(row[f]),
            Route::DownViaTrack => Some(row[t]),
            Route::Straight | Route::Down | Route::Up => None,
        }
    };
    let span = |e: usize| (boxes[edges[e].0].column, boxes[edges[e].1].column);
    let mut track = vec![0usize; edges.len()];
    let mut tracks_in_band = vec![0usize; rows];
    let mut by_length: Vec<usize> = (0..edges.len()).filter(|&e| band(e).is_some()).collect();
    by_length.sort_by_key(|&e| (span(e).1 - span(e).0, span(e).0));
    for (i, &e) in by_length.iter().enumerate() {
        let (a, b) = span(e);
        let mut lowest = 0;
        let mut taken = Vec::new();
        for &p in by_length[..i].iter().filter(|&&p| band(p) == band(e)) {
            let (pa, pb) = span(p);
            // Runs that meet at a box count as overlapping, or they would read as one line.
            if pa <= b && a <= pb {
                taken.push(track[p]);
                if a <= pa && pb <= b {
                    lowest = lowest.max(track[p] + 1);
                }
            }
        }
        track[e] = (lowest..).find(|t| !taken.contains(t)).unwrap_or(lowest);
        let bd = band(e).unwrap_or(0);
        tracks_in_band[bd] = tracks_in_band[bd].max(track[e] + 1);
    }

    // Which side of which box each arrow uses, in slot order. Left and right sides: slot 0 is
    // the middle, then upwards; higher tracks take higher slots and the verticals nearest the
    // box, so arrows sharing a box do not cross there.
    let mut left_in: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut right_out: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut bottom_out: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut bottom_in: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (e, &(f, t, _)) in edges.iter().enumerate() {
        match routes[e] {
            Route::Straight | Route::OverRow => {
                right_out[f].push(e);
                left_in[t].push(e);
            }
            Route::Down | Route::DownViaTrack => {
                bottom_out[f].push(e);
                left_in[t].push(e);
            }
            Route::Up | Route::UpViaTrack => {
                right_out[f].push(e);
                bottom_in[t].push(e);
            }
        }
    }
    for list in &mut left_in {
        list.sort_by_key(|&e| match routes[e] {
            Route::Straight => (0, 0),
            // From further left enters lower, so it passes under the later ones' verticals.
            Route::Down => (1, boxes[edges[e].0].column),
            Route::OverRow | Route::DownViaTrack | Route::Up | Route::UpViaTrack => (2, track[e]),
        });
    }
    for list in &mut right_out {
        list.sort_by_key(|&e| match routes[e] {
            Route::Straight => (0, 0),
            // Going further right leaves lower, so it passes under the nearer ones' verticals.
            Route::Up => (1, usize::MAX - boxes[edges[e].1].column),
            Route::OverRow | Route::UpViaTrack | Route::Down | Route::DownViaTrack => (2, track[e]),
        });
    }
    // Bottom sides, left to right: the arrow that turns lowest leaves leftmost.
    for list in &mut bottom_out {
        list.sort_by_key(|&e| match routes[e] {
            Route::Down => (Reverse(row[edges[e].1]), 0, 0),
            Route::DownViaTrack
            | Route::Straight
            | Route::OverRow
            | Route::Up
            | Route::UpViaTrack => (Reverse(row[edges[e].1]), 1, track[e]),
        });
    }
    // ... and the arrow that turns highest arrives leftmost.
    for list in &mut bottom_in {
        list.sort_by_key(|&e| match routes[e] {
            Route::UpViaTrack => (row[edges[e].0], 0, Reverse(track[e])),
            Route::Up | Route::Straight | Route::OverRow | Route::Down | Route::DownViaTrack => {
                (row[edges[e].0], 1, Reverse(0))
            }
        });
    }
    let position = |lists: &[Vec<usize>], b: usize, e: usize| {
        lists[b].iter().position(|&x| x == e).unwrap_or(0)
    };

    // Widths and gaps: a gap holds the verticals leaving the box before it and those arriving
    // at the box after it.
    let w: Vec<f64> = boxes.iter().map(|b| width_of(b.channels)).collect();
    let legs_out: Vec<usize> = (0..n)
        .map(|b| {
            right_out[b]
                .iter()
                .filter(|&&e| routes[e].leaves_by_leg())
                .count()
        })
        .collect();
    let legs_in: Vec<usize> = (0..n)
        .map(|b| {
            left_in[b]
                .iter()
                .filter(|&&e| routes[e].arrives_by_leg())
                .count()
        })
        .collect();
    let mut x = Vec::with_capacity(n);
    let mut cursor = MARGIN;
    for b in 0..n {
        x.push(cursor);
        let legs = legs_out[b] + if b + 1 < n { legs_in[b + 1] } else { 0 };
        cursor += w[b] + (LEG_FIRST + HEAD_ROOM + LEG * legs as f64).max(26.0);
    }
    let width = cursor + MARGIN;

    // Heights: the paper's shrinking boxes, but tall enough that the side slots stay in the
    // upper half and the spatial size fits in the lower half below the middle arrowhead.
    let mut row_height: Vec<f64> = (0..rows)
        .map(|r| (150.0 * 0.62f64.powi(r as i32)).max(14.0))
        .collect();
    for (b, bx) in boxes.iter().enumerate() {
        let slots = left_in[b].len().max(right_out[b].len()).max(1) - 1;
        let label = bx.size.chars().count() as f64 * GLYPH_EM * SIZE_FONT;
        let half = (SLOT * slots as f64 + 6.0).max(label + HEAD / 2.0 + 4.0);
        row_height[row[b]] = row_height[row[b]].max(2.0 * half);
    }
    let band_height = |r: usize| LABEL_BAND + TRACK_FIRST + TRACK * tracks_in_band[r] as f64;
    let mut row_top = vec![(MARGIN + 30.0).max(MARGIN + band_height(0) + 4.0); rows];
    for r in 1..rows {
        let paper_gap = 170.0 - (row_height[r - 1] + row_height[r]) / 2.0;
        row_top[r] = row_top[r - 1] + row_height[r - 1] + paper_gap.max(band_height(r) + 16.0);
    }
    let height = row_top[rows - 1] + row_height[rows - 1] + 120.0;

    let middle = |b: usize| row_top[row[b]] + row_height[row[b]] / 2.0;
    let bottom = |b: usize| row_top[row[b]] + row_height[row[b]];
    let track_y = |r: usize, t: usize| row_top[r] - LABEL_BAND - TRACK_FIRST - TRACK * t as f64;
    let mut arrows = Vec::with_capacity(edges.len());
    for (e, &(f, t, kind)) in edges.iter().enumerate() {
        let (right, left) = (x[f] + w[f], x[t]);
        let out_y = middle(f) - SLOT * position(&right_out, f, e) as f64;
        let in_y = middle(t) - SLOT * position(&left_in, t, e) as f64;
        // Verticals: the highest slot's is the nearest the box.
        let out_leg = || {
            let k = right_out[f].len() - 1 - position(&right_out, f, e);
            right + LEG_FIRST + LEG * k as f64
        };
        let in_leg = || {
            let k = left_in[t].len() - 1 - position(&left_in, t, e);
            left - HEAD_ROOM - LEG * k as f64
        };
        let bottom_x = |lists: &[Vec<usize>], b: usize| {
            let k = position(lists, b, e) as f64;
            x[b] + w[b] * (k + 1.0) / (lists[b].len() as f64 + 1.0)
        };
        let points = match routes[e] {
            Route::Straight => vec![(right, out_y), (left, in_y)],
            Route::OverRow => {
                let ty = track_y(row[f], track[e]);
                let (ox, ix) = (out_leg(), in_leg());
                vec![
                    (right, out_y),
                    (ox, out_y),
                    (ox, ty),
                    (ix, ty),
                    (ix, in_y),
                    (left, in_y),
                ]
            }
            Route::Down => {
                let bx = bottom_x(&bottom_out, f);
                vec![(bx, bottom(f)), (bx, in_y), (left, in_y)]
            }
            Route::DownViaTrack => {
                let (bx, ty, ix) = (
                    bottom_x(&bottom_out, f),
                    track_y(row[t], track[e]),
                    in_leg(),
                );
                vec![
                    (bx, bottom(f)),
                    (bx, ty),
                    (ix, ty),
                    (ix, in_y),
                    (left, in_y),
                ]
            }
            Route::Up => {
                let tx = bottom_x(&bottom_in, t);
                vec![(right, out_y), (tx, out_y), (tx, bottom(t))]
            }
            Route::UpViaTrack => {
                let (ox, ty, tx) = (
                    out_leg(),
                    track_y(row[f], track[e]),
                    bottom_x(&bottom_in, t),
                );
                vec![
                    (right, out_y),
                    (ox, out_y),
                    (ox, ty),
                    (tx, ty),
                    (tx, bottom(t)),
                ]
            }
        };
        arrows.push(Arrow {
            from: f,
            to: t,
            kind,
            points,
        });
    }
    Layout {
        boxes,
        arrows,
        x,
        w,
        row,
        row_top,
        row_height,
        width,
        height,
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// SVG path data, the last segment shortened so that the arrowhead's tip lands on the end.
fn path_data(points: &[(f64, f64)]) -> String {
    let mut pts = points.to_vec();
    if let [.., (ax, ay), (bx, by)] = pts.as_mut_slice() {
        let len = ((*bx - *ax).powi(2) + (*by - *ay).powi(2)).sqrt();
        if len > HEAD_INSET {
            *bx -= (*bx - *ax) / len * HEAD_INSET;
            *by -= (*by - *ay) / len * HEAD_INSET;
        }
    }
    let mut d = String::new();
    for (i, (px, py)) in pts.iter().enumerate() {
        let _ = write!(d, "{}{px:.1},{py:.1}", if i == 0 { "M" } else { " L" });
    }
    d
}

/// The SVG document.
pub fn svg(c: &Compiled) -> String {
    let (boxes, edges) = boxes_and_edges(c);
    let layout = place(boxes, edges);
    let Layout {
        boxes,
        arrows,
        x: xs,
        w: widths,
        row,
        row_top,
        row_height,
        width,
        height,
    } = &layout;
    let g = &c.graph;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="Helvetica, Arial, sans-serif">"#
    );
    let _ = writeln!(s, r#"<title>{}</title>"#, escape(&g.name));
    s.push_str("<defs>");
    let mut kinds: Vec<Edge> = arrows.iter().map(|a| a.kind).collect();
    kinds.sort();
    kinds.dedup();
    // The tip is HEAD_INSET beyond the reference point, where the path stops.
    let ref_x = 10.0 - HEAD_INSET * 10.0 / HEAD;
    for k in &kinds {
        let (color, _, _) = k.style();
        let _ = write!(
            s,
            r#"<marker id="a{}" viewBox="0 0 10 10" refX="{ref_x}" refY="5" markerUnits="userSpaceOnUse" markerWidth="{HEAD}" markerHeight="{HEAD}" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="{color}"/></marker>"#,
            *k as u8
        );
    }
    s.push_str(r##"<pattern id="frozen" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="6" height="6" fill="#dfe7f2"/><line x1="0" y1="0" x2="0" y2="6" stroke="#9aa9bf" stroke-width="2"/></pattern>"##);
    s.push_str("</defs>\n");
    let _ = writeln!(
        s,
        r##"<rect width="100%" height="100%" fill="white"/><text x="{MARGIN}" y="28" font-size="16" font-weight="bold">{}</text>"##,
        escape(&g.name)
    );
    // Arrows first, boxes over them.
    for a in arrows {
        let (color, _, class) = a.kind.style();
        let _ = writeln!(
            s,
            r#"<path class="edge {class}" data-from="{}" data-to="{}" d="{}" fill="none" stroke="{color}" stroke-width="2"{} marker-end="url(#a{})"/>"#,
            escape(&g.node(boxes[a.from].node).name),
            escape(&g.node(boxes[a.to].node).name),
            path_data(&a.points),
            a.kind.dash(),
            a.kind as u8
        );
    }
    for (i, b) in boxes.iter().enumerate() {
        let node = g.node(b.node);
        let r = row[i];
        let (w, h) = (widths[i], row_height[r]);
        let (x0, y0) = (xs[i], row_top[r]);
        let fill = if b.frozen {
            "url(#frozen)"
        } else if matches!(node.op, Op::Input(_)) {
            "#ffffff"
        } else {
            "#cfe0f3"
        };
        let mut tip = format!("{} ({})", node.name, node.op.class_name());
        for f in &b.folded {
            tip.push_str(&format!(" + {f}"));
        }
        let _ = writeln!(
            s,
            r##"<g><title>{}</title><rect x="{x0:.1}" y="{y0:.1}" width="{w:.1}" height="{h:.1}" fill="{fill}" stroke="#2b4a6f" stroke-width="1"/>"##,
            escape(&tip)
        );
        let _ = writeln!(
            s,
            r##"<text class="channels" x="{:.1}" y="{:.1}" font-size="{CHANNEL_FONT}" text-anchor="middle" fill="#222">{}</text>"##,
            x0 + w / 2.0,
            y0 - 4.0,
            b.channels
        );
        if !b.size.is_empty() {
            let _ = writeln!(
                s,
                r##"<text class="size" x="{:.1}" y="{:.1}" font-size="{SIZE_FONT}" fill="#444" transform="rotate(-90 {:.1} {:.1})">{}</text>"##,
                x0 - 2.0,
                y0 + h,
                x0 - 2.0,
                y0 + h,
                escape(&b.size)
            );
        }
        s.push_str("</g>\n");
    }
    // Legend.
    let mut ly = height - 90.0;
    let _ = writeln!(
        s,
        r##"<text x="{MARGIN}" y="{ly:.0}" font-size="11" font-weight="bold">Legend</text>"##
    );
    let mut lx = MARGIN;
    ly += 18.0;
    for k in &kinds {
        let (color, label, class) = k.style();
        let _ = writeln!(
            s,
            r#"<path class="legend {class}" d="M{lx:.0},{ly:.0} L{:.0},{ly:.0}" fill="none" stroke="{color}" stroke-width="2"{} marker-end="url(#a{})"/><text x="{:.0}" y="{:.0}" font-size="10">{label}</text>"#,
            lx + 30.0 - HEAD_INSET,
            k.dash(),
            *k as u8,
            lx + 36.0,
            ly + 4.0
        );
        lx += 48.0 + 6.0 * label.len() as f64;
    }
    if boxes.iter().any(|b| b.frozen) {
        let _ = writeln!(
            s,
            r##"<rect x="{lx:.0}" y="{:.0}" width="14" height="12" fill="url(#frozen)" stroke="#2b4a6f"/><text x="{:.0}" y="{:.0}" font-size="10">frozen (trainable: false)</text>"##,
            ly - 6.0,
            lx + 20.0,
            ly + 4.0
        );
    }
    ly += 22.0;
    let _ = writeln!(
        s,
        r##"<text x="{MARGIN}" y="{ly:.0}" font-size="10" fill="#444">Boxes are feature maps (width ~ log2 channels, number above; spatial size at the lower left); hover a box for its layers.</text>"##
    );
    s.push_str("</svg>\n");
    s
}

/// Graphviz DOT of the full layer graph (every layer, Keras names and output shapes).
pub fn dot(c: &Compiled) -> String {
    let g = &c.graph;
    let mut s = format!("digraph \"{}\" {{\n  rankdir=TB;\n  node [shape=record, fontname=\"Helvetica\", fontsize=10];\n", g.name.replace('"', "\\\""));
    for &id in &c.info.schedule {
        let node = g.node(id);
        let shape = c.info.layers[id.index()]
            .shape
            .as_ref()
            .map(|s| crate::text::shape_text(s))
            .unwrap_or_default();
        let style = if node.trainable || matches!(node.op, Op::Input(_)) {
            ""
        } else {
            ", style=filled, fillcolor=\"#dfe7f2\""
        };
        let _ = writeln!(
            s,
            "  \"{}\" [label=\"{{{} ({})|{}}}\"{style}];",
            node.name,
            node.name,
            node.op.class_name(),
            shape
        );
    }
    for &id in &c.info.schedule {
        for &input in &g.node(id).inputs {
            let _ = writeln!(
                s,
                "  \"{}\" -> \"{}\";",
                g.node(input).name,
                g.node(id).name
            );
        }
    }
    s.push_str("}\n");
    s
}
