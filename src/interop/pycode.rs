//! Reading (never running) the Python function of a Keras `Lambda` layer: Keras stores it as
//! a base64 `marshal` dump of its code object. unetc reads three things from it: the function's
//! name (to recognise a known package function), the expression of a lambda of scalar
//! arithmetic (`lambda x: x / 255`), and a lambda that returns one call of a module function
//! (`lambda x, repnum: K.repeat_elements(x, repnum, axis=3)`), by following its bytecode on a
//! stack of symbols. CPython 3.6 to 3.13 bytecode is understood (tests/fixtures/lambda_bytecode
//! holds lambdas from 3.6 to 3.13); any instruction beyond loads of parameters, numbers,
//! globals, closure variables and attributes, `+ - * /`, negation, one call and return is not
//! read (the caller refuses the layer).

use crate::ir::ops::{Expr, ScalarFn};

/// The parts of a code object unetc reads.
#[derive(Debug, Clone, PartialEq)]
pub struct Code {
    pub argcount: u32,
    pub bytecode: Vec<u8>,
    pub consts: Vec<Const>,
    /// `co_names`: the globals and attributes the bytecode names.
    pub names: Vec<String>,
}

/// A constant of the code object, as far as unetc needs it.
#[derive(Debug, Clone, PartialEq)]
pub enum Const {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Tuple(Vec<Const>),
    /// Anything else (bytes, big integers, nested code, ...).
    Other,
}

/// Marshal's reference flag on a type byte.
const FLAG_REF: u8 = 0x80;
/// Nesting beyond this is refused (a code object's constants are shallow).
const MAX_DEPTH: usize = 16;
/// The longest lambda read, in instructions (CACHE entries included).
const MAX_INSTRUCTIONS: usize = 256;
/// Strings longer than this are not kept for references (names are short): a reference to a
/// long string would otherwise copy it once per reference.
const MAX_KEPT_STRING: usize = 256;

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
    /// Objects written with the reference flag, in order: `r` names them by index.
    refs: Vec<Const>,
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

    fn string(&mut self, n: usize) -> Option<Const> {
        let s = self.bytes(n)?;
        Some(
            std::str::from_utf8(s)
                .map(|t| Const::Str(t.to_string()))
                .unwrap_or(Const::Other),
        )
    }

    /// One object; `code` gets the first code object met (the function's). A flagged object
    /// takes its reference index before its contents are read, as marshal numbers them.
    fn object(&mut self, depth: usize, code: &mut Option<Code>) -> Option<Const> {
        if depth > MAX_DEPTH {
            return None;
        }
        let byte = self.byte()?;
        let slot = (byte & FLAG_REF != 0).then(|| {
            self.refs.push(Const::Other);
            self.refs.len() - 1
        });
        let value = match byte & !FLAG_REF {
            b'N' => Const::None,
            b'T' => Const::Bool(true),
            b'F' => Const::Bool(false),
            b'.' | b'S' => Const::Other,
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
            b's' => {
                let n = self.u32()? as usize;
                self.bytes(n)?;
                Const::Other
            }
            b't' | b'u' | b'a' | b'A' => {
                let n = self.u32()? as usize;
                self.string(n)?
            }
            b'z' | b'Z' => {
                let n = self.byte()? as usize;
                self.string(n)?
            }
            b'(' => {
                let n = self.u32()? as usize;
                Const::Tuple(self.items(n, depth, code)?)
            }
            b')' => {
                let n = self.byte()? as usize;
                Const::Tuple(self.items(n, depth, code)?)
            }
            b'[' | b'<' | b'>' => {
                let n = self.u32()? as usize;
                self.items(n, depth, code)?;
                Const::Other
            }
            b'r' => {
                let index = self.u32()? as usize;
                self.refs.get(index).cloned().unwrap_or(Const::Other)
            }
            b'c' => {
                let c = self.code(depth)?;
                if code.is_none() {
                    *code = Some(c);
                }
                Const::Other
            }
            _ => return None,
        };
        if let Some(slot) = slot {
            self.refs[slot] = match &value {
                Const::Str(s) if s.len() > MAX_KEPT_STRING => Const::Other,
                // Tuples are not kept: a reference to one would copy all it holds.
                Const::Tuple(_) => Const::Other,
                v => v.clone(),
            };
        }
        Some(value)
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
    /// bytecode, 3.8–3.10 six (`posonlyargcount` and `nlocals` both). Its constants and names
    /// follow the bytecode; the rest (local names, file name, line table) is not read.
    fn code(&mut self, depth: usize) -> Option<Code> {
        let argcount = self.u32()?;
        for _ in 0..4 {
            self.u32()?;
        }
        if self.b.get(self.at)? & !FLAG_REF != b's' {
            self.u32()?;
        }
        let kind = self.byte()?;
        if kind & !FLAG_REF != b's' {
            return None;
        }
        if kind & FLAG_REF != 0 {
            self.refs.push(Const::Other);
        }
        let n = self.u32()? as usize;
        let bytecode = self.bytes(n)?.to_vec();
        let mut nested = None;
        let Const::Tuple(consts) = self.object(depth + 1, &mut nested)? else {
            return None;
        };
        let Const::Tuple(names) = self.object(depth + 1, &mut nested)? else {
            return None;
        };
        let names = names
            .into_iter()
            .map(|n| match n {
                Const::Str(s) => s,
                Const::None
                | Const::Bool(_)
                | Const::Int(_)
                | Const::Float(_)
                | Const::Tuple(_)
                | Const::Other => String::new(),
            })
            .collect();
        Some(Code {
            argcount,
            bytecode,
            consts,
            names,
        })
    }
}

/// The function's code object from its marshal dump; `None` if it cannot be read.
pub fn read_code(marshalled: &[u8]) -> Option<Code> {
    if marshalled.first()? & !FLAG_REF != b'c' {
        return None;
    }
    let mut r = Reader {
        b: marshalled,
        at: 0,
        refs: Vec::new(),
    };
    let mut code = None;
    r.object(0, &mut code)?;
    code
}

/// The opcodes unetc follows, per CPython bytecode generation (`dis.opmap`).
struct Opcodes {
    /// Instructions without an effect on what is read: RESUME and COPY_FREE_VARS, which open
    /// the code from 3.11 on, PUSH_NULL, PRECALL and NOP. CACHE entries (opcode 0) follow some
    /// instructions from 3.11 on and are skipped too.
    no_effect: &'static [u8],
    skips_caches: bool,
    load_fast: u8,
    /// 3.13's LOAD_FAST_LOAD_FAST: two parameters, `arg >> 4` then `arg & 15`.
    load_fast_pair: Option<u8>,
    load_const: u8,
    /// LOAD_GLOBAL; from 3.11 its name is `arg >> 1` (the low bit asks for a NULL).
    load_global: u8,
    global_shift: u8,
    load_deref: u8,
    /// From 3.11 LOAD_DEREF counts the parameters before the closure's variables.
    deref_after_params: bool,
    /// LOAD_ATTR; from 3.12 its name is `arg >> 1` (the low bit asks for a method).
    load_attr: u8,
    attr_shift: u8,
    load_method: Option<u8>,
    /// Calls with `arg` positional and keyword arguments, the callable under them.
    call: &'static [u8],
    /// Calls whose keyword names are a tuple on top of the stack (CALL_FUNCTION_KW, CALL_KW).
    call_kw: Option<u8>,
    /// 3.11/3.12's KW_NAMES: the next call's keyword names are constant `arg`.
    kw_names: Option<u8>,
    unary_negative: u8,
    binary_subscr: u8,
    build_slice: u8,
    /// 3.12+'s BINARY_SLICE: `container[start:stop]` in one instruction.
    binary_slice: Option<u8>,
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

/// The opcode table of a code object's bytecode, told by its first instructions: RESUME is
/// 151 in 3.11 and 3.12 (after COPY_FREE_VARS 149 in a closure), 149 in 3.13 (after
/// COPY_FREE_VARS 62); older bytecode has no RESUME. 3.11 calls go through PRECALL (166),
/// which 3.12 does not have.
fn opcodes(bytecode: &[u8]) -> Opcodes {
    let opcode_at = |k: usize| bytecode.get(2 * k).copied();
    let has_precall = bytecode.chunks_exact(2).any(|op| op[0] == 166);
    match (opcode_at(0), opcode_at(1)) {
        (Some(151), _) | (Some(149), Some(151)) => Opcodes {
            no_effect: if has_precall {
                &[151, 149, 2, 166, 9]
            } else {
                &[151, 149, 2, 9]
            },
            skips_caches: true,
            load_fast: 124,
            load_fast_pair: None,
            load_const: 100,
            load_global: 116,
            global_shift: 1,
            load_deref: 137,
            deref_after_params: true,
            load_attr: 106,
            attr_shift: if has_precall { 0 } else { 1 },
            load_method: has_precall.then_some(160),
            call: &[171],
            call_kw: None,
            kw_names: Some(172),
            unary_negative: 11,
            binary_subscr: 25,
            build_slice: 133,
            binary_slice: (!has_precall).then_some(26),
            return_value: 83,
            binary: Binary::Op(122),
        },
        (Some(149), _) | (Some(62), Some(149)) => Opcodes {
            no_effect: &[149, 62, 34, 30],
            skips_caches: true,
            load_fast: 85,
            load_fast_pair: Some(88),
            load_const: 83,
            load_global: 91,
            global_shift: 1,
            load_deref: 84,
            deref_after_params: true,
            load_attr: 82,
            attr_shift: 1,
            load_method: None,
            call: &[53],
            call_kw: Some(57),
            kw_names: None,
            unary_negative: 42,
            binary_subscr: 5,
            build_slice: 50,
            binary_slice: Some(4),
            return_value: 36,
            binary: Binary::Op(45),
        },
        _ => Opcodes {
            no_effect: &[9],
            skips_caches: false,
            load_fast: 124,
            load_fast_pair: None,
            load_const: 100,
            load_global: 116,
            global_shift: 0,
            load_deref: 136,
            deref_after_params: false,
            load_attr: 106,
            attr_shift: 0,
            load_method: Some(160),
            // CALL_FUNCTION, and CALL_METHOD (3.7–3.10) after LOAD_METHOD.
            call: &[131, 161],
            call_kw: Some(141),
            kw_names: None,
            unary_negative: 11,
            binary_subscr: 25,
            build_slice: 133,
            binary_slice: None,
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

/// A number bound to a lambda's second parameter by the layer's `arguments` (Keras calls
/// `f(inputs, **arguments)`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Bound {
    Int(i64),
    Float(f64),
}

/// Where a called function comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Root {
    /// A global of the defining module (`K` of `from keras import backend as K`).
    Global(String),
    /// Variable k of the enclosing function (the layer config's closure holds its value, k-th).
    Closure(usize),
}

/// An argument of a call a lambda returns.
#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    /// The tensor (`x`), a number, or arithmetic of them.
    Value(Expr),
    Str(String),
    Bool(bool),
    /// A constant tuple of whole numbers (`(64, 64)`).
    Ints(Vec<i64>),
    /// Variable k of the enclosing function, or a slice of it (`shape[1:3]`: start and stop,
    /// `None` for an open end), whose value the layer config's closure holds.
    Closure {
        index: usize,
        slice: Option<(Option<i64>, Option<i64>)>,
    },
}

/// A lambda that returns one call: `K.repeat_elements(x, 2, axis=3)` is the global `K`, the
/// attributes `["repeat_elements"]`, the arguments `[x, 2]` and the keyword `axis=3`.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub root: Root,
    pub attributes: Vec<String>,
    pub args: Vec<Arg>,
    pub keywords: Vec<(String, Arg)>,
}

/// What a lambda returns, as far as unetc reads it.
#[derive(Debug, Clone, PartialEq)]
pub enum Returned {
    Expr(Expr),
    Call(Call),
}

/// A value on the stack of the bytecode being followed.
enum Sym {
    Value(Expr),
    Str(String),
    Bool(bool),
    Ints(Vec<i64>),
    Nothing,
    /// A function or module: a root and the attributes taken from it.
    Path(Root, Vec<String>),
    KwNames(Vec<String>),
    /// `start:stop` (BUILD_SLICE), and a closure variable sliced by one.
    Slice(Option<i64>, Option<i64>),
    ClosureSlice(usize, Option<i64>, Option<i64>),
    Call(Call),
}

/// The expression of a lambda of scalar arithmetic, from its bytecode: `lambda x: x / 255`, or
/// with a second parameter bound to the number `bound` (Keras calls `f(inputs, **arguments)`:
/// `lambda inputs, scale: inputs[0] + inputs[1] * scale` with `arguments={"scale": 0.17}`),
/// where `x[k]` is the k-th input. `None` for anything else.
pub fn arithmetic_lambda(code: &Code, bound: Option<f64>) -> Option<Expr> {
    match read_lambda(code, bound.map(Bound::Float))? {
        Returned::Expr(e) => Some(e),
        Returned::Call(_) => None,
    }
}

/// The call a lambda returns (`lambda x, repnum: K.repeat_elements(x, repnum, axis=3)` with
/// `repnum` bound); `None` for anything else.
pub fn call_lambda(code: &Code, bound: Option<Bound>) -> Option<Call> {
    match read_lambda(code, bound)? {
        Returned::Call(c) => Some(c),
        Returned::Expr(_) => None,
    }
}

/// What a lambda of one parameter (or two, the second bound) returns, followed on a stack.
fn read_lambda(code: &Code, bound: Option<Bound>) -> Option<Returned> {
    match (code.argcount, bound) {
        (1, None) | (2, Some(_)) => {}
        _ => return None,
    }
    let ops = code.bytecode.chunks_exact(2);
    // A lambda unetc reads is a handful of instructions; a long one (an expression tree deep
    // enough to exhaust the stack when walked) is not read.
    if !ops.remainder().is_empty() || ops.len() > MAX_INSTRUCTIONS {
        return None;
    }
    let table = opcodes(&code.bytecode);
    let constant = |i: u8| match code.consts.get(i as usize)? {
        Const::Int(v) => Some(Sym::Value(Expr::Int(*v))),
        Const::Float(v) if v.is_finite() => Some(Sym::Value(Expr::Float(*v))),
        Const::Str(s) => Some(Sym::Str(s.clone())),
        Const::Bool(b) => Some(Sym::Bool(*b)),
        Const::None => Some(Sym::Nothing),
        // Keyword names (CALL_FUNCTION_KW, KW_NAMES), or a tuple of whole numbers.
        Const::Tuple(items) => {
            let names: Option<Vec<String>> = items
                .iter()
                .map(|c| match c {
                    Const::Str(s) => Some(s.clone()),
                    Const::None
                    | Const::Bool(_)
                    | Const::Int(_)
                    | Const::Float(_)
                    | Const::Tuple(_)
                    | Const::Other => None,
                })
                .collect();
            let ints: Option<Vec<i64>> = items
                .iter()
                .map(|c| match c {
                    Const::Int(v) => Some(*v),
                    Const::None
                    | Const::Bool(_)
                    | Const::Str(_)
                    | Const::Float(_)
                    | Const::Tuple(_)
                    | Const::Other => None,
                })
                .collect();
            match (names, ints) {
                (Some(names), _) if !names.is_empty() => Some(Sym::KwNames(names)),
                (_, Some(ints)) => Some(Sym::Ints(ints)),
                _ => None,
            }
        }
        Const::Float(_) | Const::Other => None,
    };
    let name = |i: u8, shift: u8| code.names.get(usize::from(i >> shift)).cloned();
    let param = |i: u8| match (i, bound) {
        (0, _) => Some(Expr::X),
        (1, Some(Bound::Int(v))) => Some(Expr::Int(v)),
        (1, Some(Bound::Float(v))) => Some(Expr::Float(v)),
        _ => None,
    };
    let value = |s: Sym| match s {
        Sym::Value(e) => Some(e),
        Sym::Str(_)
        | Sym::Bool(_)
        | Sym::Ints(_)
        | Sym::Nothing
        | Sym::Path(..)
        | Sym::KwNames(_)
        | Sym::Slice(..)
        | Sym::ClosureSlice(..)
        | Sym::Call(_) => None,
    };
    // A slice's end: a whole number, or None for an open end.
    let bound_of = |s: Sym| match s {
        Sym::Value(Expr::Int(v)) => Some(Some(v)),
        Sym::Nothing => Some(None),
        _ => None,
    };
    let closure_var = |s: Sym| match s {
        Sym::Path(Root::Closure(k), attributes) if attributes.is_empty() => Some(k),
        _ => None,
    };
    let n = ops.len();
    let mut stack: Vec<Sym> = Vec::new();
    let mut kw_names: Vec<String> = Vec::new();
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
            let b = value(stack.pop()?)?;
            let a = value(stack.pop()?)?;
            stack.push(Sym::Value(Expr::Bin(f, Box::new(a), Box::new(b))));
        } else if (table.skips_caches && opcode == 0) || table.no_effect.contains(&opcode) {
            // CACHE entries, RESUME, PUSH_NULL, ...: nothing read changes.
        } else if opcode == table.load_fast {
            stack.push(Sym::Value(param(arg)?));
        } else if Some(opcode) == table.load_fast_pair {
            stack.push(Sym::Value(param(arg >> 4)?));
            stack.push(Sym::Value(param(arg & 15)?));
        } else if opcode == table.load_const {
            stack.push(constant(arg)?);
        } else if opcode == table.load_global {
            stack.push(Sym::Path(
                Root::Global(name(arg, table.global_shift)?),
                Vec::new(),
            ));
        } else if opcode == table.load_deref {
            let index = if table.deref_after_params {
                usize::from(arg).checked_sub(code.argcount as usize)?
            } else {
                usize::from(arg)
            };
            stack.push(Sym::Path(Root::Closure(index), Vec::new()));
        } else if opcode == table.build_slice {
            if arg != 2 {
                return None;
            }
            let stop = bound_of(stack.pop()?)?;
            let start = bound_of(stack.pop()?)?;
            stack.push(Sym::Slice(start, stop));
        } else if Some(opcode) == table.binary_slice {
            let stop = bound_of(stack.pop()?)?;
            let start = bound_of(stack.pop()?)?;
            let k = closure_var(stack.pop()?)?;
            stack.push(Sym::ClosureSlice(k, start, stop));
        } else if opcode == table.load_attr || Some(opcode) == table.load_method {
            let shift = if opcode == table.load_attr {
                table.attr_shift
            } else {
                0
            };
            let Sym::Path(root, mut attributes) = stack.pop()? else {
                return None;
            };
            attributes.push(name(arg, shift)?);
            stack.push(Sym::Path(root, attributes));
        } else if Some(opcode) == table.kw_names {
            let Sym::KwNames(names) = constant(arg)? else {
                return None;
            };
            kw_names = names;
        } else if table.call.contains(&opcode) || Some(opcode) == table.call_kw {
            if Some(opcode) == table.call_kw {
                let Sym::KwNames(names) = stack.pop()? else {
                    return None;
                };
                kw_names = names;
            }
            let count = usize::from(arg);
            if kw_names.len() > count || stack.len() < count + 1 {
                return None;
            }
            let mut args = Vec::with_capacity(count);
            for s in stack.drain(stack.len() - count..) {
                args.push(match s {
                    Sym::Value(e) => Arg::Value(e),
                    Sym::Str(t) => Arg::Str(t),
                    Sym::Bool(b) => Arg::Bool(b),
                    Sym::Ints(v) => Arg::Ints(v),
                    Sym::Path(Root::Closure(index), attributes) if attributes.is_empty() => {
                        Arg::Closure { index, slice: None }
                    }
                    Sym::ClosureSlice(index, start, stop) => Arg::Closure {
                        index,
                        slice: Some((start, stop)),
                    },
                    Sym::Nothing
                    | Sym::Path(..)
                    | Sym::KwNames(_)
                    | Sym::Slice(..)
                    | Sym::Call(_) => return None,
                });
            }
            let names = std::mem::take(&mut kw_names);
            let positional = count - names.len();
            let keywords = names.into_iter().zip(args.split_off(positional)).collect();
            let Sym::Path(root, attributes) = stack.pop()? else {
                return None;
            };
            stack.push(Sym::Call(Call {
                root,
                attributes,
                args,
                keywords,
            }));
        } else if opcode == table.binary_subscr {
            // `x[k]`: the k-th input, k a whole-number constant; or a closure variable sliced.
            match (stack.pop()?, stack.pop()?) {
                (Sym::Value(Expr::Int(index)), Sym::Value(Expr::X)) => {
                    stack.push(Sym::Value(Expr::Item(usize::try_from(index).ok()?)));
                }
                (Sym::Slice(start, stop), container) => {
                    let k = closure_var(container)?;
                    stack.push(Sym::ClosureSlice(k, start, stop));
                }
                _ => return None,
            }
        } else if opcode == table.unary_negative {
            let e = value(stack.pop()?)?;
            stack.push(Sym::Value(Expr::Neg(Box::new(e))));
        } else if opcode == table.return_value {
            // The one value left is the result, and nothing follows.
            return match (stack.pop(), stack.is_empty(), k + 1 == n) {
                (Some(Sym::Value(e)), true, true) => Some(Returned::Expr(e)),
                (Some(Sym::Call(c)), true, true) => Some(Returned::Call(c)),
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
            names: Vec::new(),
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
