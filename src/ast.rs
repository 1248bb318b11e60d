//! The one AST both front ends produce. Every node carries the byte span of the
//! text it came from, in the file it came from, so later stages can point at it.

use crate::diag::{FileId, Span};

/// A parsed spec file: one model (a `unet` template is a model whose body is one call).
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    pub file: FileId,
    pub model: Model,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    /// Explicit model name (`Model(..., name="U-Net")`); `None` means Keras's `model`, `model_1`, ...
    pub name: Option<Ident>,
    pub defaults: Vec<Defaults>,
    /// `train(...)` / `train:`: how `unetc train` trains the model (README "Training").
    pub train: Option<Call>,
    pub blocks: Vec<BlockDef>,
    pub body: Vec<Stmt>,
    pub span: Span,
}

/// A name as written, with its span.
#[derive(Debug, Clone, PartialEq)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

/// `defaults conv2d(kernel_size: 3, padding: valid)`: keyword arguments merged under every call of a kind.
#[derive(Debug, Clone, PartialEq)]
pub struct Defaults {
    pub kind: Ident,
    pub args: Vec<Arg>,
    pub span: Span,
}

/// `block double(f) { conv2d(f) -> conv2d(f) }`: a parameterised sub-graph, called like a layer.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockDef {
    pub name: Ident,
    pub params: Vec<Ident>,
    pub body: Vec<Stmt>,
    /// `block down() as functional { .. }`: each call is a nested model of this Keras class.
    pub nested: Option<crate::ir::NestedClass>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Stmt {
    /// `target = source -> call -> call`; the result becomes the current tensor.
    Chain {
        target: Option<Target>,
        chain: Chain,
        span: Span,
    },
    /// `for a, b in expr { body }`
    For {
        vars: Vec<Ident>,
        iter: Expr,
        body: Vec<Stmt>,
        span: Span,
    },
    /// `include "backbones/vgg16.unet" (trainable: false)`: inline another spec's layers.
    Include {
        path: Expr,
        args: Vec<Arg>,
        span: Span,
    },
    /// `output a, b`: the model's outputs (default: the last statement's tensor).
    Output { sources: Vec<Source>, span: Span },
    /// `n = 16`, `skips = skips + [x]`: stores a value; the current tensor stays as it was.
    /// (`x = y` and `x = [a, b]` read as chains: they make the tensor current.)
    Let {
        target: Target,
        value: Expr,
        span: Span,
    },
    /// `if c1 { .. } else if c2 { .. } else { otherwise }`: the first branch whose condition
    /// holds runs, else `otherwise`. Kept flat, so a long `else if` chain nests nothing.
    If {
        branches: Vec<Branch>,
        otherwise: Vec<Stmt>,
        span: Span,
    },
}

impl Stmt {
    pub fn span(&self) -> Span {
        match self {
            Stmt::Chain { span, .. }
            | Stmt::For { span, .. }
            | Stmt::Include { span, .. }
            | Stmt::Output { span, .. }
            | Stmt::Let { span, .. }
            | Stmt::If { span, .. } => *span,
        }
    }
}

/// One `if cond { body }` of an `if` statement.
#[derive(Debug, Clone, PartialEq)]
pub struct Branch {
    pub cond: Expr,
    pub body: Vec<Stmt>,
}

/// Where a statement stores its result: a variable, or one slot of an indexed variable (`skip[f]`;
/// two indices `x[i, j]` are the index `Tuple([i, j])`).
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub name: Ident,
    pub index: Option<Expr>,
    pub span: Span,
}

/// `source -> call -> call`. Without a source the chain starts from the current tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Chain {
    pub source: Option<Source>,
    pub calls: Vec<Call>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// A variable, an indexed variable or a layer name.
    Ref(Expr),
    /// Several tensors feeding one multi-input layer: `[skip[f] -> cropping2d(4), up]`.
    List(Vec<Chain>, Span),
}

/// A layer, block or template call: `conv2d(64, 3, activation: relu)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub callee: Ident,
    pub args: Vec<Arg>,
    pub span: Span,
}

/// A positional (`name == None`) or keyword argument.
#[derive(Debug, Clone, PartialEq)]
pub struct Arg {
    pub name: Option<Ident>,
    pub value: Expr,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ExprKind {
    Int(i64),
    Float(f64),
    Bool(bool),
    None,
    /// A string; `{expr}` parts are interpolated.
    Str(Vec<StrPart>),
    /// A variable or, if no variable has that name, a bare word such as `relu` or `same`.
    Name(String),
    /// `a[i]`; `a[i, j]` (a two-index variable's slot) has a `Tuple` index.
    Index(Box<Expr>, Box<Expr>),
    List(Vec<Expr>),
    Tuple(Vec<Expr>),
    Map(Vec<(Ident, Expr)>),
    /// `a..b` (exclusive) or `a..=b` (inclusive).
    Range {
        start: Box<Expr>,
        end: Box<Expr>,
        inclusive: bool,
    },
    Binary(BinOp, Box<Expr>, Box<Expr>),
    Neg(Box<Expr>),
    /// `not x`
    Not(Box<Expr>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum StrPart {
    Lit(String),
    Expr(Expr),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    FloorDiv,
    Mod,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    And,
    Or,
}

impl Expr {
    pub fn new(kind: ExprKind, span: Span) -> Expr {
        Expr { kind, span }
    }
}

/// How tightly `not` binds: looser than comparisons, tighter than `and` (`not a == b` is
/// `not (a == b)`, as in Python).
pub const NOT_PRECEDENCE: u8 = 3;

impl BinOp {
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::FloorDiv => "//",
            BinOp::Mod => "%",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::And => "and",
            BinOp::Or => "or",
        }
    }

    /// Binding strength, loosest first: `or`, `and`, (`not`), comparisons, `+ -`, `* / // %`.
    pub fn precedence(self) -> u8 {
        match self {
            BinOp::Or => 1,
            BinOp::And => 2,
            BinOp::Eq | BinOp::Ne | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => 4,
            BinOp::Add | BinOp::Sub => 5,
            BinOp::Mul | BinOp::Div | BinOp::FloorDiv | BinOp::Mod => 6,
        }
    }
}
