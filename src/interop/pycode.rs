//! Reading (never running) the Python function of a Keras `Lambda` layer: Keras stores it as
//! a base64 `marshal` dump of its code object. unetc reads two things from it: the function's
//! name (to recognise a known package function) and, for a one-argument lambda of scalar
//! arithmetic (`lambda x: x / 255`), its expression, by following its bytecode on a stack.
//! CPython 3.6 to 3.13 bytecode is understood (tests/fixtures/lambda_bytecode holds lambdas
//! from 3.8 to 3.13); any instruction beyond loads of `x` and numbers, `+ - * /`, negation and
//! return is not read (the caller refuses the layer).

use crate::ir::ops::{Expr, ScalarFn};

/// The parts of a code object unetc reads.
#[derive(Debug, Clone, PartialEq)]
pub struct Code {
    pub argcount: u32,
    pub bytecode: Vec<u8>,
    pub consts: Vec<Const>,
}

/// A constant of the code object, as far as unetc needs it.
#[derive(Debug, Clone, PartialEq)]
pub enum Const {
    None,
    Int(i64),
    Float(f64),
    /// Anything else (strings, tuples, nested code, ...).
    Other,
}

/// Marshal's reference flag on a type byte.
const FLAG_REF: u8 = 0x80;
/// Nesting beyond this is refused (a code object's constants are shallow).
const MAX_DEPTH: usize = 16;
/// The longest arithmetic lambda read, in instructions (CACHE entries included).
const MAX_INSTRUCTIONS: usize = 256;

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Option<u8> {
        let v = *self.b.get(self.at)?;
        self.at += 1;
        Some(v)
    }

    fn u32(&mut self) -> Option<u32> {
        let s = self.b.get(self.at..self.at + 4)?;
        self.at += 4;
        Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }

    fn bytes(&mut self, n: usize) -> Option<&[u8]> {
        let s = self.b.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }

    /// One object; `code` gets the first code object met (the function's).
    fn object(&mut self, depth: usize, code: &mut Option<Code>) -> Option<Const> {
        if depth > MAX_DEPTH {
            return None;
        }
        let t = self.byte()? & !FLAG_REF;
        Some(match t {
            b'N' => Const::None,
            b'T' | b'F' | b'.' | b'S' => Const::Other,
            b'i' => Const::Int(i64::from(self.u32()? as i32)),
            b'g' => {
                let s = self.bytes(8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(s);
                Const::Float(f64::from_le_bytes(a))
            }
            // A long: 15-bit digits; only its size is needed to skip it.
            b'l' => {
                let n = self.u32()? as i32;
                self.bytes(n.unsigned_abs() as usize * 2)?;
                Const::Other
            }
            b's' | b't' | b'u' | b'a' | b'A' => {
                let n = self.u32()? as usize;
                self.bytes(n)?;
                Const::Other
            }
            b'z' | b'Z' => {
                let n = self.byte()? as usize;
                self.bytes(n)?;
                Const::Other
            }
            b'(' | b'[' | b'<' | b'>' => {
                let n = self.u32()? as usize;
                self.items(n, depth, code)?;
                Const::Other
            }
            b')' => {
                let n = self.byte()? as usize;
                self.items(n, depth, code)?;
                Const::Other
            }
            // A reference to an earlier object: its value is not kept (constants of interest
            // are numbers, which CPython does not share by reference in a lambda's tuple).
            b'r' => {
                self.u32()?;
                Const::Other
            }
            b'c' => {
                let c = self.code(depth)?;
                if code.is_none() {
                    *code = Some(c);
                }
                Const::Other
            }
            _ => return None,
        })
    }

    fn items(&mut self, n: usize, depth: usize, code: &mut Option<Code>) -> Option<Vec<Const>> {
        // Each item takes a byte at least: a count beyond the data is refused, not allocated.
        if n > self.b.len() - self.at {
            return None;
        }
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.object(depth + 1, code)?);
        }
        Some(out)
    }

    /// A code object after its type byte: 3.11+ (and 3.6/3.7) have five ints before the
    /// bytecode, 3.8–3.10 six (`posonlyargcount` and `nlocals` both).
    fn code(&mut self, depth: usize) -> Option<Code> {
        let argcount = self.u32()?;
        for _ in 0..4 {
            self.u32()?;
        }
        if self.b.get(self.at)? & !FLAG_REF != b's' {
            self.u32()?;
        }
        if self.byte()? & !FLAG_REF != b's' {
            return None;
        }
        let n = self.u32()? as usize;
        let bytecode = self.bytes(n)?.to_vec();
        let mut nested = None;
        let consts = match self.byte()? & !FLAG_REF {
            b'(' => {
                let n = self.u32()? as usize;
                self.items(n, depth, &mut nested)?
            }
            b')' => {
                let n = self.byte()? as usize;
                self.items(n, depth, &mut nested)?
            }
            _ => return None,
        };
        Some(Code {
            argcount,
            bytecode,
            consts,
        })
    }
}

/// The function's code object from its marshal dump; `None` if it cannot be read.
pub fn read_code(marshalled: &[u8]) -> Option<Code> {
    let mut r = Reader {
        b: marshalled,
        at: 0,
    };
    if r.byte()? & !FLAG_REF != b'c' {
        return None;
    }
    r.code(0)
}

/// The opcodes unetc follows, per CPython bytecode generation (`dis.opmap`).
struct Opcodes {
    /// RESUME, which opens the code from 3.11 on; CACHE entries (opcode 0) follow some
    /// instructions there and are skipped.
    resume: Option<u8>,
    load_fast: u8,
    load_const: u8,
    unary_negative: u8,
    binary_subscr: u8,
    return_value: u8,
    binary: Binary,
}

enum Binary {
    /// 3.11+: BINARY_OP with the operator as its argument (NB_ADD 0, NB_MULTIPLY 5,
    /// NB_SUBTRACT 10, NB_TRUE_DIVIDE 11).
    Op(u8),
    /// 3.6–3.10: BINARY_ADD, BINARY_SUBTRACT, BINARY_MULTIPLY, BINARY_TRUE_DIVIDE.
    Separate {
        add: u8,
        subtract: u8,
        multiply: u8,
        divide: u8,
    },
}

/// The opcode table of a code object's bytecode, told by its first instruction: RESUME is 151
/// in 3.11 and 3.12, 149 in 3.13; older bytecode has no RESUME.
fn opcodes(bytecode: &[u8]) -> Opcodes {
    match bytecode.first() {
        Some(151) => Opcodes {
            resume: Some(151),
            load_fast: 124,
            load_const: 100,
            unary_negative: 11,
            binary_subscr: 25,
            return_value: 83,
            binary: Binary::Op(122),
        },
        Some(149) => Opcodes {
            resume: Some(149),
            load_fast: 85,
            load_const: 83,
            unary_negative: 42,
            binary_subscr: 5,
            return_value: 36,
            binary: Binary::Op(45),
        },
        _ => Opcodes {
            resume: None,
            load_fast: 124,
            load_const: 100,
            unary_negative: 11,
            binary_subscr: 25,
            return_value: 83,
            binary: Binary::Separate {
                add: 23,
                subtract: 24,
                multiply: 20,
                divide: 27,
            },
        },
    }
}

/// The expression of a lambda of scalar arithmetic, from its bytecode: `lambda x: x / 255`, or
/// with a second parameter bound to the number `bound` (Keras calls `f(inputs, **arguments)`:
/// `lambda inputs, scale: inputs[0] + inputs[1] * scale` with `arguments={"scale": 0.17}`),
/// where `x[k]` is the k-th input. `None` for anything else.
pub fn arithmetic_lambda(code: &Code, bound: Option<f64>) -> Option<Expr> {
    match (code.argcount, bound) {
        (1, None) | (2, Some(_)) => {}
        _ => return None,
    }
    let ops = code.bytecode.chunks_exact(2);
    // A normalisation lambda is a handful of instructions; a long one (an expression tree deep
    // enough to exhaust the stack when walked) is not read.
    if !ops.remainder().is_empty() || ops.len() > MAX_INSTRUCTIONS {
        return None;
    }
    let table = opcodes(&code.bytecode);
    let constant = |i: u8| match code.consts.get(i as usize)? {
        Const::Int(v) => Some(Expr::Int(*v)),
        Const::Float(v) if v.is_finite() => Some(Expr::Float(*v)),
        Const::Float(_) | Const::None | Const::Other => None,
    };
    let n = ops.len();
    let mut stack: Vec<Expr> = Vec::new();
    for (k, op) in ops.enumerate() {
        let (opcode, arg) = (op[0], op[1]);
        let binary = match &table.binary {
            Binary::Op(code) if opcode == *code => Some(match arg {
                0 => ScalarFn::Add,
                5 => ScalarFn::Multiply,
                10 => ScalarFn::Subtract,
                11 => ScalarFn::Divide,
                _ => return None,
            }),
            Binary::Op(_) => None,
            Binary::Separate {
                add,
                subtract,
                multiply,
                divide,
            } => [
                (*add, ScalarFn::Add),
                (*subtract, ScalarFn::Subtract),
                (*multiply, ScalarFn::Multiply),
                (*divide, ScalarFn::Divide),
            ]
            .iter()
            .find(|(c, _)| *c == opcode)
            .map(|&(_, f)| f),
        };
        if let Some(f) = binary {
            let b = stack.pop()?;
            let a = stack.pop()?;
            stack.push(Expr::Bin(f, Box::new(a), Box::new(b)));
        } else if table.resume.is_some()
            && (opcode == 0 || (k == 0 && table.resume == Some(opcode)))
        {
            // RESUME first, CACHE entries after some instructions: no effect.
        } else if opcode == table.load_fast && arg == 0 {
            stack.push(Expr::X);
        } else if opcode == table.load_fast && arg == 1 {
            stack.push(Expr::Float(bound?));
        } else if opcode == table.load_const {
            stack.push(constant(arg)?);
        } else if opcode == table.binary_subscr {
            // `x[k]`: the k-th input, k a whole-number constant.
            let (Expr::Int(index), Expr::X) = (stack.pop()?, stack.pop()?) else {
                return None;
            };
            stack.push(Expr::Item(usize::try_from(index).ok()?));
        } else if opcode == table.unary_negative {
            let e = stack.pop()?;
            stack.push(Expr::Neg(Box::new(e)));
        } else if opcode == table.return_value {
            // The one value left is the result, and nothing follows.
            return match (stack.pop(), stack.is_empty(), k + 1 == n) {
                (Some(e), true, true) => Some(e),
                _ => None,
            };
        } else {
            return None;
        }
    }
    None
}

/// Whether the code object is the function `name` (its `co_name`): the marshalled string
/// `name` follows the bytecode's constants and names. A short ASCII string (`z`/`Z`, one
/// length byte) or a 4-byte-length one (`a`, `A`, `u`, `t`), either with the reference flag.
pub fn holds_name(marshalled: &[u8], name: &str) -> bool {
    let name = name.as_bytes();
    let Ok(len) = u8::try_from(name.len()) else {
        return false;
    };
    let short = marshalled
        .windows(name.len() + 2)
        .any(|w| matches!(w[0] & !FLAG_REF, b'z' | b'Z') && w[1] == len && &w[2..] == name);
    let long_len = (name.len() as u32).to_le_bytes();
    let long = marshalled.windows(name.len() + 5).any(|w| {
        matches!(w[0] & !FLAG_REF, b'a' | b'A' | b'u' | b't')
            && w[1..5] == long_len
            && &w[5..] == name
    });
    short || long
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn code(b64: &str) -> Code {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64.split_whitespace().collect::<String>())
            .unwrap();
        read_code(&bytes).unwrap()
    }

    #[test]
    fn reads_lambdas_that_tf_keras_wrote() {
        // `Lambda(lambda x: x / 255)`, `lambda x: x * 2.5 - 1` and `lambda x: 1 - x` as tf.keras
        // 2.21 on CPython 3.11 wrote them (`model.to_json()`, function[0]).
        let cases = [
            (
                "4wEAAAAAAAAAAAAAAAIAAAADAAAA8wwAAACXAHwAZAF6CwAAUwApAk7p/wAAAKkAqQHaAXhzAQAA\
                 ACD6Cy90bXAvZHNiLnB5+gg8bGFtYmRhPnIHAAAABgAAAHMKAAAAgACQUZgTkVeAAPMAAAAA",
                "x / 255",
            ),
            (
                "4wEAAAAAAAAAAAAAAAIAAAADAAAA8xIAAACXAHwAZAF6BQAAZAJ6CgAAUwApA07nAAAAAAAABEDp\
                 AQAAAKkAqQHaAXhzAQAAACD6Cy90bXAvZHNiLnB5+gg8bGFtYmRhPnIIAAAABwAAAHMOAAAAgACQ\
                 UZgTkVeYcZFbgADzAAAAAA==",
                "x * 2.5 - 1",
            ),
            (
                "4wEAAAAAAAAAAAAAAAIAAAADAAAA8wwAAACXAGQBfAB6CgAAUwApAk7pAQAAAKkAqQHaAXhzAQAA\
                 ACD6Cy90bXAvZHNiLnB5+gg8bGFtYmRhPnIHAAAACAAAAHMKAAAAgACQUZgRkVWAAPMAAAAA",
                "1 - x",
            ),
        ];
        for (b64, want) in cases {
            let c = code(b64);
            let e = arithmetic_lambda(&c, None).unwrap();
            assert_eq!(
                crate::ir::ops::Arithmetic::from_expr(&e).unwrap().text,
                want
            );
        }
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        // classification_models' slice_tensor (3.11): a named function with branches.
        let c = code(
            "4wQAAAAAAAAAAAAAAAYAAAADAAAA864AAACXAHwDZAFrAgAAAAByFHwAZABkAIUCZABkAIUCZABk\
             AIUCfAF8AoUCZgQZAAAAAAAAAAAAUwB8A2QCawIAAAAAchR8AGQAZACFAnwBfAKFAmQAZACFAmQA\
             ZACFAmYEGQAAAAAAAAAAAFMAdAEAAAAAAAAAAAAAZAOgAQAAAAAAAAAAAAAAAAAAAAAAAAAAfAOm\
             AQAAqwEAAAAAAAAAAKYBAACrAQAAAAAAAAAAggGpBE7pAwAAAOkBAAAAeidTbGljZSBheGlzIHNo\
             b3VsZCBiZSBpbiAoMSwgMyksIGdvdCB7fS6pAtoKVmFsdWVFcnJvctoGZm9ybWF0KQTaAXjaBXN0\
             YXJ02gRzdG9w2gRheGlzcwQAAAAgICAg+mgvcm9vdC8ucHllbnYvdmVyc2lvbnMvMy4xMS43L2xp\
             Yi9weXRob24zLjExL3NpdGUtcGFja2FnZXMvY2xhc3NpZmljYXRpb25fbW9kZWxzL21vZGVscy9f\
             Y29tbW9uX2Jsb2Nrcy5wedoMc2xpY2VfdGVuc29ycg0AAAAEAAAAc3kAAACAANgHC4hxgnmAedgP\
             EJARkBGQEZBBkEGQQZBxkHGQcZgloASYKtARJNQPJdAIJdgJDZARihmIGdgPEJARkBGQEZBFmCSQ\
             SqABoAGgAaAxoDGgMdARJNQPJdAIJeUOGNAZQtcZSdIZScgk0RlP1BlP0Q5Q1A5Q0AhQ8wAAAAA=",
        );
        assert_eq!(c.argcount, 4);
        assert!(arithmetic_lambda(&c, None).is_none());
        // Truncated or garbled data is refused without a panic.
        let bytes = base64::engine::general_purpose::STANDARD
            .decode("4wEAAAAAAAAAAAAAAAIAAAADAAAA8wwAAACXAHwAZAF6CwAAUwApAk7p/wAAAKkAqQHaAXhzAQAA")
            .unwrap();
        for n in 0..bytes.len() {
            let _ = read_code(&bytes[..n]).map(|c| arithmetic_lambda(&c, None));
        }
        assert!(read_code(&[b'c', 0xff, 0xff, 0xff, 0xff]).is_none());
        assert!(read_code(&[]).is_none());
        // A chain of a million operations (an expression tree too deep to walk) is refused.
        let mut long = vec![124u8, 0];
        for _ in 0..1_000_000 {
            long.extend([100, 1, 23, 0]);
        }
        long.extend([83, 0]);
        let code = Code {
            argcount: 1,
            bytecode: long,
            consts: vec![Const::None, Const::Int(2)],
        };
        assert!(arithmetic_lambda(&code, None).is_none());
        // Every single-byte change of a valid dump: read or refused, never a panic.
        for i in 0..bytes.len() {
            for v in [0u8, 0x29, 0x63, 0x7f, 0x80, 0xe3, 0xff] {
                let mut b = bytes.clone();
                b[i] = v;
                let _ = read_code(&b).map(|c| arithmetic_lambda(&c, None));
            }
        }
    }
}
