//! The activation plan of every spec: no layer writes where it reads, tensors alive at the
//! same time never share memory, and the arena is close to the live-set minimum.

mod common;

use common::*;
use unetc::exec::plan::plan;

#[test]
fn plans_are_sound_and_tight() {
    for rel in spec_files() {
        let c = compile(&rel);
        let p = plan(&c.graph, &c.info).expect("a plan for a checked spec");
        let overlap = |a: &std::ops::Range<usize>, b: &std::ops::Range<usize>| {
            a.start < b.end && b.start < a.end
        };
        for step in &p.steps {
            for input in &step.inputs {
                assert!(
                    !overlap(&step.output, input),
                    "{}: a layer writes where it reads",
                    rel.display()
                );
            }
        }
        // Replay lifetimes: a tensor is alive from its producer's step to its last reader's.
        let n = p.steps.len();
        let step_of: std::collections::HashMap<_, _> = p
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| (s.node, i))
            .collect();
        let mut last: Vec<usize> = (0..n).collect();
        for (i, step) in p.steps.iter().enumerate() {
            for input in &c.graph.node(step.node).inputs {
                let producer = step_of[input];
                last[producer] = last[producer].max(i);
            }
        }
        for out in &c.graph.outputs {
            last[step_of[out]] = n - 1;
        }
        for (a, &last_a) in last.iter().enumerate() {
            for b in a + 1..n {
                if b <= last_a && !p.steps[a].output.is_empty() && !p.steps[b].output.is_empty() {
                    assert!(
                        !overlap(&p.steps[a].output, &p.steps[b].output),
                        "{}: steps {a} and {b} share memory while both alive",
                        rel.display()
                    );
                }
            }
        }
        assert!(p.arena_len >= p.live_minimum);
        // Within 25% of the minimum on every seed model (the original U-Net is the worst case).
        assert!(
            p.arena_len as f64 <= 1.25 * p.live_minimum as f64,
            "{}: arena {} vs live minimum {}",
            rel.display(),
            p.arena_len,
            p.live_minimum
        );
    }
}
