//! `unetc diagram`: every spec draws; the U-Net comes out as a U (the deepest boxes in the
//! middle columns), skips are dashed arrows across, frozen layers are marked, DOT lists every layer.

mod common;

use common::*;
use std::path::{Path, PathBuf};

#[test]
fn every_spec_draws() {
    for rel in spec_files() {
        let c = compile(&rel);
        let svg = unetc::report::diagram::svg(&c);
        assert!(
            svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""),
            "{}",
            rel.display()
        );
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<g>").count(), svg.matches("</g>").count());
        let dot = unetc::report::diagram::dot(&c);
        for &id in &c.info.schedule {
            assert!(
                dot.contains(&format!("\"{}\" [label=", c.graph.node(id).name)),
                "{}",
                rel.display()
            );
        }
    }
}

#[test]
fn the_original_unet_is_a_u() {
    let c = compile(Path::new("specs/original.unet"));
    let svg = unetc::report::diagram::svg(&c);
    // One box per feature map: the input, 19 convs (8 down, 2 bottom, 8 up, the 1x1 head),
    // 4 pools, 4 transposed convs, 4 concatenations = 32; crops and the softmax fold into boxes.
    assert_eq!(svg.matches("<g><title>").count(), 32);
    // Four skip connections (dashed) and all five arrow kinds in the legend.
    assert_eq!(
        svg.matches("stroke-dasharray=\"6 3\" marker-end").count(),
        4 + 1
    );
    for label in [
        "conv",
        "conv 1x1",
        "max pool",
        "up-conv / upsample",
        "copy (and crop)",
    ] {
        assert!(
            svg.contains(&format!(">{label}</text>")),
            "legend lacks {label}"
        );
    }
    assert!(!svg.contains("frozen (trainable: false)"));
    let frozen = unetc::report::diagram::svg(&compile(Path::new("specs/vgg16_unet.unet")));
    assert!(frozen.contains("frozen (trainable: false)") && frozen.contains("url(#frozen)"));
}

// Geometry read back from the SVG, so the checks below hold for whatever the layout does.
// Arrows are the elements with a `marker-end` (`<path d="M.. L..">` or `<line>`), boxes the
// `<rect>` of each `<g><title>`, labels the channel counts (centred text above a box) and the
// spatial sizes (text rotated at a box's lower left).

#[derive(Debug, Clone, Copy)]
struct Rect {
    x0: f64,
    y0: f64,
    x1: f64,
    y1: f64,
}

impl Rect {
    fn grown(self, by: f64) -> Rect {
        Rect {
            x0: self.x0 - by,
            y0: self.y0 - by,
            x1: self.x1 + by,
            y1: self.y1 + by,
        }
    }

    /// Whether the segment from `a` to `b` meets the rectangle (Liang–Barsky clipping).
    fn meets(self, a: (f64, f64), b: (f64, f64)) -> bool {
        let (dx, dy) = (b.0 - a.0, b.1 - a.1);
        let (mut t0, mut t1) = (0.0f64, 1.0f64);
        for (p, q) in [
            (-dx, a.0 - self.x0),
            (dx, self.x1 - a.0),
            (-dy, a.1 - self.y0),
            (dy, self.y1 - a.1),
        ] {
            if p == 0.0 {
                if q < 0.0 {
                    return false;
                }
            } else if p < 0.0 {
                t0 = t0.max(q / p);
            } else {
                t1 = t1.min(q / p);
            }
        }
        t0 <= t1
    }
}

struct Arrow {
    line: String,
    points: Vec<(f64, f64)>,
}

impl Arrow {
    fn segments(&self) -> impl Iterator<Item = ((f64, f64), (f64, f64))> + '_ {
        self.points.windows(2).map(|w| (w[0], w[1]))
    }

    /// The arrowhead, generously: 10 units back from the path's end to 4 beyond it (where
    /// the tip lands), 5 to either side.
    fn head(&self) -> Rect {
        let [.., a, b] = self.points[..] else {
            panic!("arrow without a segment: {}", self.line)
        };
        let len = ((b.0 - a.0).powi(2) + (b.1 - a.1).powi(2)).sqrt();
        let (ux, uy) = ((b.0 - a.0) / len, (b.1 - a.1) / len);
        let (back, front) = (
            (b.0 - 10.0 * ux, b.1 - 10.0 * uy),
            (b.0 + 4.0 * ux, b.1 + 4.0 * uy),
        );
        Rect {
            x0: back.0.min(front.0),
            y0: back.1.min(front.1),
            x1: back.0.max(front.0),
            y1: back.1.max(front.1),
        }
        .grown(5.0)
    }
}

fn attr(line: &str, name: &str) -> Option<String> {
    let start = line.find(&format!(" {name}=\""))? + name.len() + 3;
    let len = line[start..].find('"')?;
    Some(line[start..start + len].to_string())
}

fn num(line: &str, name: &str) -> f64 {
    attr(line, name)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no number {name} in {line}"))
}

fn text_of(line: &str) -> String {
    let start = line.find('>').expect("text element") + 1;
    line[start..line[start..].find('<').expect("closed text") + start].to_string()
}

fn arrows(svg: &str) -> Vec<Arrow> {
    let mut out = Vec::new();
    for line in svg.lines().filter(|l| l.contains("marker-end")) {
        let points = if line.starts_with("<line") {
            vec![
                (num(line, "x1"), num(line, "y1")),
                (num(line, "x2"), num(line, "y2")),
            ]
        } else {
            attr(line, "d")
                .expect("path data")
                .split(['M', 'L', ' '])
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (x, y) = p.split_once(',').expect("x,y");
                    (x.parse().expect("x"), y.parse().expect("y"))
                })
                .collect()
        };
        out.push(Arrow {
            line: line.to_string(),
            points,
        });
    }
    out
}

/// Every box, with its tooltip (`name (Class)...`).
fn boxes(svg: &str) -> Vec<(String, Rect)> {
    svg.lines()
        .filter(|l| l.starts_with("<g><title>"))
        .map(|l| {
            let title = l["<g><title>".len()..l.find("</title>").expect("title")].to_string();
            let rect = &l[l.find("<rect").expect("box rect")..];
            let (x, y) = (num(rect, "x"), num(rect, "y"));
            let r = Rect {
                x0: x,
                y0: y,
                x1: x + num(rect, "width"),
                y1: y + num(rect, "height"),
            };
            (title, r)
        })
        .collect()
}

/// Channel counts and spatial sizes: their text and where the glyphs are (0.6 em a glyph).
fn labels(svg: &str) -> Vec<(String, Rect)> {
    let mut out = Vec::new();
    for line in svg.lines().filter(|l| l.starts_with("<text")) {
        let (x, y, size) = (num(line, "x"), num(line, "y"), num(line, "font-size"));
        let text = text_of(line);
        let length = 0.6 * size * text.chars().count() as f64;
        if line.contains("transform=\"rotate(-90") {
            // Rotated about its start: it runs upwards, its glyphs to the left of `x`.
            out.push((
                text,
                Rect {
                    x0: x - 0.75 * size,
                    y0: y - length,
                    x1: x + 0.25 * size,
                    y1: y,
                },
            ));
        } else if line.contains("text-anchor=\"middle\"") {
            out.push((
                text,
                Rect {
                    x0: x - length / 2.0,
                    y0: y - 0.75 * size,
                    x1: x + length / 2.0,
                    y1: y + 0.25 * size,
                },
            ));
        }
    }
    out
}

fn diagram_of(rel: &str) -> String {
    unetc::report::diagram::svg(&compile(Path::new(rel)))
}

fn drawn_specs() -> Vec<PathBuf> {
    let mut specs = spec_files();
    specs.push(PathBuf::from(UNET_PLUS_PLUS));
    specs
}

const UNET_PLUS_PLUS: &str = "tests/fixtures/unet_plus_plus.unet";

#[test]
fn arrows_leave_the_labels_readable() {
    for rel in drawn_specs() {
        let svg = unetc::report::diagram::svg(&compile(&rel));
        let labels = labels(&svg);
        assert!(labels.len() > 10, "{}: labels not found", rel.display());
        for arrow in arrows(&svg) {
            for (text, label) in &labels {
                let head = arrow.head();
                let overlap = head.x0 < label.x1
                    && label.x0 < head.x1
                    && head.y0 < label.y1
                    && label.y0 < head.y1;
                assert!(
                    !overlap,
                    "{}: the arrowhead of {} covers the label {text} at {label:?}",
                    rel.display(),
                    arrow.line
                );
                for (a, b) in arrow.segments() {
                    assert!(
                        !label.grown(1.0).meets(a, b),
                        "{}: {} runs over the label {text} at {label:?}",
                        rel.display(),
                        arrow.line
                    );
                }
            }
        }
    }
}

#[test]
fn arrows_go_around_boxes_and_never_along_each_other() {
    for rel in drawn_specs() {
        let svg = unetc::report::diagram::svg(&compile(&rel));
        let boxes = boxes(&svg);
        let arrows = arrows(&svg);
        for arrow in &arrows {
            for (a, b) in arrow.segments() {
                for (title, r) in &boxes {
                    assert!(
                        !r.grown(-1.5).meets(a, b),
                        "{}: {} passes through the box of {title}",
                        rel.display(),
                        arrow.line
                    );
                }
            }
        }
        // Two arrows on one line would read as one connection.
        for (i, p) in arrows.iter().enumerate() {
            for q in &arrows[i + 1..] {
                for (a, b) in p.segments() {
                    for (c, d) in q.segments() {
                        let on_one_row = a.1 == b.1 && c.1 == d.1 && (a.1 - c.1).abs() < 2.0;
                        let on_one_column = a.0 == b.0 && c.0 == d.0 && (a.0 - c.0).abs() < 2.0;
                        let shared = if on_one_row {
                            a.0.max(b.0).min(c.0.max(d.0)) - a.0.min(b.0).max(c.0.min(d.0))
                        } else if on_one_column {
                            a.1.max(b.1).min(c.1.max(d.1)) - a.1.min(b.1).max(c.1.min(d.1))
                        } else {
                            0.0
                        };
                        assert!(
                            shared <= 1.0,
                            "{}: these arrows run together for {shared:.0} units:\n{}\n{}",
                            rel.display(),
                            p.line,
                            q.line
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn every_dense_skip_of_unet_plus_plus_is_its_own_arrow() {
    let c = compile(Path::new(UNET_PLUS_PLUS));
    let g = &c.graph;
    // Skips: concatenation inputs that are not the up-sampled lower node.
    let mut skips = Vec::new();
    for &id in &c.info.schedule {
        if matches!(g.node(id).op, unetc::ir::Op::Concatenate(_)) {
            for &input in &g.node(id).inputs {
                if !matches!(g.node(input).op, unetc::ir::Op::Conv2DTranspose(_)) {
                    skips.push((g.node(input).name.clone(), g.node(id).name.clone()));
                }
            }
        }
    }
    // X^{0,0..2} -> X^{0,3} and so on: 3 + 2 + 1 on level 0, 2 + 1 on level 1, 1 on level 2.
    assert_eq!(skips.len(), 10);
    let svg = unetc::report::diagram::svg(&c);
    let mut drawn: Vec<(String, String)> = svg
        .lines()
        .filter(|l| l.starts_with("<path class=\"edge copy\""))
        .map(|l| {
            (
                attr(l, "data-from").expect("data-from"),
                attr(l, "data-to").expect("data-to"),
            )
        })
        .collect();
    drawn.sort();
    skips.sort();
    assert_eq!(drawn, skips);
    // Each a different path (that they never share a line is checked for every spec above).
    let paths: std::collections::HashSet<String> = svg
        .lines()
        .filter(|l| l.starts_with("<path class=\"edge copy\""))
        .map(|l| attr(l, "d").expect("path data"))
        .collect();
    assert_eq!(paths.len(), 10);
}

#[test]
fn a_strided_convolution_is_drawn_as_a_convolution() {
    let svg = diagram_of("specs/backbones/resnet50.unet");
    let legend_colour = |label: &str| {
        let line = svg
            .lines()
            .find(|l| l.contains(&format!(">{label}</text>")) && l.contains("marker-end"))
            .unwrap_or_else(|| panic!("legend lacks {label}"));
        attr(line, "stroke").expect("legend stroke")
    };
    let boxes = boxes(&svg);
    let arrows = arrows(&svg);
    // The arrow into a box is the one that ends nearest to it.
    let arrow_into = |layer: &str| {
        let (_, r) = boxes
            .iter()
            .find(|(title, _)| title.starts_with(&format!("{layer} (")))
            .unwrap_or_else(|| panic!("no box for {layer}"));
        let distance = |p: (f64, f64)| {
            let dx = (r.x0 - p.0).max(p.0 - r.x1).max(0.0);
            let dy = (r.y0 - p.1).max(p.1 - r.y1).max(0.0);
            dx.hypot(dy)
        };
        let nearest = arrows
            .iter()
            .min_by(|a, b| {
                let (ea, eb) = (a.points[a.points.len() - 1], b.points[b.points.len() - 1]);
                distance(ea).total_cmp(&distance(eb))
            })
            .expect("arrows");
        attr(&nearest.line, "stroke").expect("arrow stroke")
    };
    // conv1_conv is 7x7 with strides 2: it goes down a level, as a convolution.
    assert_eq!(arrow_into("conv1_conv"), legend_colour("conv"));
    assert_eq!(arrow_into("pool1_pool"), legend_colour("max pool"));
    assert_eq!(arrow_into("avg_pool"), legend_colour("global average pool"));
    assert_eq!(arrow_into("predictions"), legend_colour("dense"));
    // The 1x1 strided projection of a stage is a 1x1 convolution.
    assert_eq!(arrow_into("conv3_block1_0_conv"), legend_colour("conv 1x1"));
    assert!(svg.contains("<path class=\"edge conv\" data-from=\"input_1\" data-to=\"conv1_conv\""));
}
