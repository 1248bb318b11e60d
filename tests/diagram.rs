//! `unetc diagram`: every spec draws; the U-Net comes out as a U (the deepest boxes in the
//! middle columns), skips are dashed arrows across, frozen layers are marked, DOT lists every layer.

mod common;

use common::*;
use std::path::Path;

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
