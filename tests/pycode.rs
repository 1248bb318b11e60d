//! Reading Keras Lambda functions from their marshalled bytecode (src/interop/pycode.rs), for
//! every CPython that wrote tests/fixtures/lambda_bytecode (generate.py there: 3.6 to 3.13):
//! each arithmetic lambda reads as the same chain of operations as its source text, each lambda
//! returning one call (`K.repeat_elements(x, n, axis=3)`) as the call its source makes, and
//! every other function is refused.

mod common;

use base64::Engine;
use common::*;
use unetc::interop::pycode::{arithmetic_lambda, call_lambda, read_code, Arg, Bound, Root};
use unetc::ir::ops::{Arithmetic, LambdaBody};

#[test]
fn arithmetic_lambdas_read_alike_from_every_python() {
    let dir = root().join("tests/fixtures/lambda_bytecode");
    let mut versions = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let fixture: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let python = fixture["python"].as_str().unwrap().to_string();
        let decode = |b64: &serde_json::Value| {
            base64::engine::general_purpose::STANDARD
                .decode(b64.as_str().unwrap())
                .unwrap()
        };
        for (source, b64) in fixture["read"].as_object().unwrap() {
            let code = read_code(&decode(b64))
                .unwrap_or_else(|| panic!("{python}: `{source}`: code object not read"));
            let expr = arithmetic_lambda(&code, None)
                .unwrap_or_else(|| panic!("{python}: `{source}`: bytecode not read"));
            let got = Arithmetic::from_expr(&expr).unwrap();
            let want = Arithmetic::parse(source).unwrap();
            // Python folds constant subexpressions (`2 - 0.5` is 1.5 in the bytecode).
            assert_eq!(
                got.ops, want.ops,
                "{python}: `{source}` read as `{}`",
                got.text
            );
        }
        for (source, b64) in fixture["refused"].as_object().unwrap() {
            let read = read_code(&decode(b64))
                .and_then(|c| arithmetic_lambda(&c, None))
                .and_then(|e| Arithmetic::from_expr(&e).ok());
            assert!(read.is_none(), "{python}: `{source}` read as {read:?}");
        }
        // `lambda inputs, scale: ...` with `scale` bound by Keras's `arguments`.
        for (source, case) in fixture["two_inputs"].as_object().unwrap() {
            let code = read_code(&decode(&case["code"])).unwrap();
            assert!(
                arithmetic_lambda(&code, None).is_none(),
                "{python}: unbound `{source}`"
            );
            let expr = arithmetic_lambda(&code, Some(0.17))
                .unwrap_or_else(|| panic!("{python}: `{source}`: bytecode not read"));
            let want = case["as"].as_str().unwrap().replace('c', "0.17");
            match LambdaBody::from_expr(&expr) {
                Ok(LambdaBody::ScaledAdd {
                    first: 0,
                    second: 1,
                    scale,
                    text,
                }) => {
                    assert_eq!((scale, text.as_str()), (0.17, want.as_str()), "{python}");
                }
                other => panic!("{python}: `{source}` read as {other:?}"),
            }
        }
        // Lambdas returning one call: read as the source says, or refused.
        for case in fixture["calls"].as_array().unwrap() {
            let source = case["source"].as_str().unwrap();
            let code = read_code(&decode(&case["code"]))
                .unwrap_or_else(|| panic!("{python}: `{source}`: code object not read"));
            let bound = case.get("bound").and_then(|b| b.as_i64()).map(Bound::Int);
            let got = call_lambda(&code, bound);
            let want = &case["want"];
            if want.is_null() {
                assert!(got.is_none(), "{python}: `{source}` read as {got:?}");
                continue;
            }
            let got = got.unwrap_or_else(|| panic!("{python}: `{source}`: not read"));
            let arg = |a: &Arg| match a {
                Arg::Value(e) if *e == unetc::ir::ops::Expr::X => serde_json::json!("x"),
                Arg::Value(e) => serde_json::json!(e.as_int()),
                Arg::Str(s) => serde_json::json!({ "str": s }),
                Arg::Bool(b) => serde_json::json!(b),
                Arg::Ints(v) => serde_json::json!(v),
                Arg::Closure { index, slice } => serde_json::json!({
                    "closure": index,
                    "slice": slice.map(|(a, b)| serde_json::json!([a, b])),
                }),
            };
            let root = match &got.root {
                Root::Global(name) => serde_json::json!(name),
                Root::Closure(k) => serde_json::json!({ "closure": k }),
            };
            let read = serde_json::json!({
                "root": root,
                "attributes": got.attributes,
                "args": got.args.iter().map(arg).collect::<Vec<_>>(),
                "keywords": got.keywords.iter().map(|(k, v)| serde_json::json!([k, arg(v)])).collect::<Vec<_>>(),
            });
            assert_eq!(&read, want, "{python}: `{source}`");
            // A call is not arithmetic.
            assert!(arithmetic_lambda(&code, bound.map(|_| 2.0)).is_none());
        }
        versions.push(python);
    }
    versions.sort();
    assert!(versions.len() >= 8, "fixtures missing: {versions:?}");
}
