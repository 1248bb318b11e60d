//! `unetc diagram`: a self-contained SVG in the style of the U-Net paper's Figure 1 (feature maps
//! as boxes at their resolution level, contracting path down the left, expanding path up the
//! right, skip connections across, arrows coloured by operation), and Graphviz DOT.
//!
//! Layout: every "feature map" layer (a convolution, pooling, upsampling, merge, ...) is one box;
//! normalisation, activation and dropout layers fold into the box before them. Columns follow the
//! execution order; the row is the resolution level (pooling goes one down, upsampling one up),
//! so a U-Net comes out as a U and any other graph as a staircase of levels.

use crate::ir::{Graph, NodeId, Op};
use crate::Compiled;
use std::collections::HashMap;
use std::fmt::Write;

/// What an arrow means, with its legend text and colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Edge {
    Conv,
    Conv1x1,
    Pool,
    Up,
    CopyCrop,
    Concat,
    Merge,
    Other,
}

impl Edge {
    fn style(self) -> (&'static str, &'static str) {
        match self {
            Edge::Conv => ("#1f77b4", "conv"),
            Edge::Conv1x1 => ("#17becf", "conv 1x1"),
            Edge::Pool => ("#d62728", "max pool"),
            Edge::Up => ("#2ca02c", "up-conv / upsample"),
            Edge::CopyCrop => ("#7f7f7f", "copy (and crop)"),
            Edge::Concat => ("#7f7f7f", "concatenate"),
            Edge::Merge => ("#9467bd", "add"),
            Edge::Other => ("#8c564b", "other"),
        }
    }
}

/// Layers drawn inside the box of the layer before them.
fn folds(op: &Op) -> bool {
    matches!(
        op,
        Op::BatchNormalization(_)
            | Op::Activation(_)
            | Op::ReLU(_)
            | Op::Softmax(_)
            | Op::Dropout(_)
            | Op::Cropping2D(_)
            | Op::ZeroPadding2D(_)
    )
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
            (r, cropped || matches!(node.op, Op::Cropping2D(_)))
        } else {
            (id, false)
        };
        rep.insert(id, r);
    }
    rep
}

fn level_step(op: &Op) -> i64 {
    match op {
        Op::MaxPooling2D(p) if p.strides[0] > 1 => 1,
        Op::Conv2D(c) if c.args.strides[0] > 1 => 1,
        Op::Conv2DTranspose(c) if c.args.strides[0] > 1 => -1,
        Op::UpSampling2D(u) if u.size[0] > 1 => -1,
        _ => 0,
    }
}

fn edge_kind(op: &Op, cropped: bool, skip: bool) -> Edge {
    if skip || cropped {
        return Edge::CopyCrop;
    }
    match op {
        Op::Conv2D(c) if c.args.kernel_size == [1, 1] => Edge::Conv1x1,
        Op::Conv2D(c) if c.args.strides[0] > 1 => Edge::Pool,
        Op::Conv2D(_) | Op::Dense(_) => Edge::Conv,
        Op::MaxPooling2D(_) | Op::GlobalAveragePooling2D(_) => Edge::Pool,
        Op::Conv2DTranspose(_) | Op::UpSampling2D(_) => Edge::Up,
        Op::Add(_) => Edge::Merge,
        Op::Concatenate(_) => Edge::Concat,
        _ => Edge::Other,
    }
}

fn layout(c: &Compiled) -> (Vec<Box_>, Vec<(usize, usize, Edge)>) {
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
    // The shown box's level is that of its last folded layer (a crop does not change it).
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

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The SVG document.
pub fn svg(c: &Compiled) -> String {
    let (boxes, edges) = layout(c);
    let g = &c.graph;
    let min_level = boxes.iter().map(|b| b.level).min().unwrap_or(0);
    let max_level = boxes.iter().map(|b| b.level).max().unwrap_or(0);
    let width_of = |ch: i64| 4.0 + 3.0 * ((ch.max(1) as f64).log2() + 1.0);
    let height_of = |lv: i64| (150.0 * 0.62f64.powi((lv - min_level) as i32)).max(14.0);
    let level_gap = 170.0;
    let (margin, gap) = (40.0, 26.0);
    let mut x = margin;
    let mut xs = Vec::new();
    for b in &boxes {
        xs.push(x);
        x += width_of(b.channels) + gap;
    }
    let width = x + margin;
    let center_y = |lv: i64| margin + 30.0 + 75.0 + (lv - min_level) as f64 * level_gap;
    let height = center_y(max_level) + 75.0 + 110.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="Helvetica, Arial, sans-serif">"#
    );
    let _ = writeln!(s, r#"<title>{}</title>"#, escape(&g.name));
    s.push_str("<defs>");
    let mut kinds: Vec<Edge> = edges.iter().map(|e| e.2).collect();
    kinds.sort();
    kinds.dedup();
    for k in &kinds {
        let (color, _) = k.style();
        let _ = write!(
            s,
            r#"<marker id="a{}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="6" markerHeight="6" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="{color}"/></marker>"#,
            *k as u8
        );
    }
    s.push_str(r##"<pattern id="frozen" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="6" height="6" fill="#dfe7f2"/><line x1="0" y1="0" x2="0" y2="6" stroke="#9aa9bf" stroke-width="2"/></pattern>"##);
    s.push_str("</defs>\n");
    let _ = writeln!(
        s,
        r##"<rect width="100%" height="100%" fill="white"/><text x="{margin}" y="28" font-size="16" font-weight="bold">{}</text>"##,
        escape(&g.name)
    );
    // Arrows first, boxes over them.
    for &(from, to, kind) in &edges {
        let (color, _) = kind.style();
        let (a, b) = (&boxes[from], &boxes[to]);
        let (ax, bx) = (xs[from] + width_of(a.channels), xs[to]);
        let (ay, by) = (center_y(a.level), center_y(b.level));
        let (x1, y1, x2, y2) = if a.level == b.level {
            (ax, ay, bx, by)
        } else if b.level > a.level {
            // Down: from the bottom of the source to the top of the target.
            (
                xs[from] + width_of(a.channels) / 2.0,
                ay + height_of(a.level) / 2.0,
                xs[to] + width_of(b.channels) / 2.0,
                by - height_of(b.level) / 2.0,
            )
        } else {
            (
                xs[from] + width_of(a.channels) / 2.0,
                ay - height_of(a.level) / 2.0,
                xs[to] + width_of(b.channels) / 2.0,
                by + height_of(b.level) / 2.0,
            )
        };
        let dash = if kind == Edge::CopyCrop {
            r#" stroke-dasharray="6 3""#
        } else {
            ""
        };
        let _ = writeln!(
            s,
            r#"<line x1="{x1:.1}" y1="{y1:.1}" x2="{:.1}" y2="{y2:.1}" stroke="{color}" stroke-width="2"{dash} marker-end="url(#a{})"/>"#,
            x2 - 2.0,
            kind as u8
        );
    }
    for (i, b) in boxes.iter().enumerate() {
        let node = g.node(b.node);
        let (w, h) = (width_of(b.channels), height_of(b.level));
        let (x0, y0) = (xs[i], center_y(b.level) - h / 2.0);
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
            r##"<text x="{:.1}" y="{:.1}" font-size="9" text-anchor="middle" fill="#222">{}</text>"##,
            x0 + w / 2.0,
            y0 - 4.0,
            b.channels
        );
        if !b.size.is_empty() {
            let _ = writeln!(
                s,
                r##"<text x="{:.1}" y="{:.1}" font-size="8" fill="#444" transform="rotate(-90 {:.1} {:.1})">{}</text>"##,
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
        r##"<text x="{margin}" y="{ly:.0}" font-size="11" font-weight="bold">Legend</text>"##
    );
    let mut lx = margin;
    ly += 18.0;
    for k in &kinds {
        let (color, label) = k.style();
        let dash = if *k == Edge::CopyCrop {
            r#" stroke-dasharray="6 3""#
        } else {
            ""
        };
        let _ = writeln!(
            s,
            r#"<line x1="{lx:.0}" y1="{ly:.0}" x2="{:.0}" y2="{ly:.0}" stroke="{color}" stroke-width="2"{dash} marker-end="url(#a{})"/><text x="{:.0}" y="{:.0}" font-size="10">{label}</text>"#,
            lx + 30.0,
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
        r##"<text x="{margin}" y="{ly:.0}" font-size="10" fill="#444">Boxes are feature maps (width ~ log2 channels, number above; spatial size at the lower left); hover a box for its layers.</text>"##
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
            .map(|s| crate::report::shape_text(s))
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
