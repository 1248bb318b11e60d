//! `UNETC_PROFILE=1`: where a training step's time goes, printed to stderr after each step
//! (for performance work; nothing is timed when the variable is unset).

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

/// Seconds per part of the step, summed over the step's layers.
static TOTALS: Mutex<BTreeMap<String, f64>> = Mutex::new(BTreeMap::new());

pub fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("UNETC_PROFILE").is_some())
}

/// Times `work` under `part` when profiling.
pub fn time<T>(part: impl FnOnce() -> String, work: impl FnOnce() -> T) -> T {
    if !enabled() {
        return work();
    }
    let start = Instant::now();
    let result = work();
    let secs = start.elapsed().as_secs_f64();
    let mut totals = TOTALS.lock().unwrap_or_else(|e| e.into_inner());
    *totals.entry(part()).or_default() += secs;
    result
}

/// Prints the parts timed since the last report, largest first, and forgets them.
pub fn report(step: u64) {
    if !enabled() {
        return;
    }
    let totals = std::mem::take(&mut *TOTALS.lock().unwrap_or_else(|e| e.into_inner()));
    let mut rows: Vec<(String, f64)> = totals.into_iter().collect();
    rows.sort_by(|a, b| b.1.total_cmp(&a.1));
    eprintln!("profile of step {step}:");
    for (part, secs) in rows {
        eprintln!("{:>10.1} ms  {part}", secs * 1e3);
    }
}
