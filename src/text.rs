//! How unetc writes numbers, byte sizes and shapes. The ground floor: every stage may use it,
//! and it uses none of them.

/// Python's repr of an output shape: "(None, 570, 570, 64)", "(None, 25088)", 1-D "(None,)";
/// inputs "[(None, 572, 572, 1)]".
pub fn shape_repr(shape: &[Option<u64>], is_input: bool) -> String {
    let dims: Vec<String> = shape
        .iter()
        .map(|d| d.map_or_else(|| "None".to_string(), |n| n.to_string()))
        .collect();
    // A one-element Python tuple keeps its trailing comma.
    let tuple = match dims.as_slice() {
        [only] => format!("({only},)"),
        _ => format!("({})", dims.join(", ")),
    };
    // Keras reports an InputLayer's output_shape as a list of the input shapes.
    if is_input {
        format!("[{tuple}]")
    } else {
        tuple
    }
}

/// Python's repr of a shape with the batch dimension: `(None, 570, 570, 64)`.
pub fn shape_text(dims: &[i64]) -> String {
    let shape: Vec<Option<u64>> = std::iter::once(None)
        .chain(dims.iter().map(|&d| Some(d.max(0) as u64)))
        .collect();
    shape_repr(&shape, false)
}

/// `{:,}` formatting: 31030658 -> "31,030,658".
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// One decimal with an SI prefix: 150428424448 -> "150.4 G".
pub fn si(x: f64, unit: &str) -> String {
    let (v, p) = if x >= 1e12 {
        (x / 1e12, "T")
    } else if x >= 1e9 {
        (x / 1e9, "G")
    } else if x >= 1e6 {
        (x / 1e6, "M")
    } else if x >= 1e3 {
        (x / 1e3, "k")
    } else {
        (x, "")
    };
    format!("{v:.1} {p}{unit}").trim_end().to_string()
}

/// Bytes in binary units: "165.6 MiB", "1.50 GiB", "12 B".
pub fn bytes(b: u64) -> String {
    let x = b as f64;
    if x >= (1u64 << 30) as f64 {
        format!("{:.2} GiB", x / (1u64 << 30) as f64)
    } else if x >= (1u64 << 20) as f64 {
        format!("{:.1} MiB", x / (1u64 << 20) as f64)
    } else if x >= 1024.0 {
        format!("{:.1} KiB", x / 1024.0)
    } else {
        format!("{b} B")
    }
}

/// A byte size as `--memory` takes it: `8GiB`, `512MiB`, `1.5g`, `4096` (binary units; `kb`, `mb`,
/// ... mean the same). `None` for anything else, or outside 1 byte ..= 10^18.
pub fn parse_bytes(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let v: f64 = num.parse().ok()?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" | "tib" => 1024.0f64.powi(4),
        _ => return None,
    };
    let bytes = v * mult;
    (1.0..1e18).contains(&bytes).then_some(bytes as u64)
}
