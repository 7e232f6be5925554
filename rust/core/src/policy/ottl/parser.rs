//! OTTL conditions to an evaluable tree, resolving paths, enums and converters while parsing.
//!
//! The grammar is the reference's boolean expression (`pkg/ottl/grammar.go`), precedence `not` > `and` > `or`:
//!
//! ```text
//! condition  = term ("or" term)*
//! term       = boolean ("and" boolean)*
//! boolean    = ["not"] ( value CMP value | "true" | "false" | Converter(...) | "(" condition ")" )
//! value      = "nil" | STRING | "true" | "false" | BYTES | ENUM | math
//! math       = product (("+" | "-") product)*
//! product    = operand (("*" | "/") operand)*
//! operand    = INT | FLOAT | path | Converter(...) | "(" math ")"
//! path       = name ("[" key "]")* ("." name ("[" key "]")*)*     (key: a string or an int literal)
//! ```
//!
//! `not` is not repeatable (`not not x` is a syntax error in the reference too). A `(` opening a boolean may also
//! open an arithmetic group (`(end_time_unix_nano - start_time_unix_nano) > 1000`); the reference's parser
//! backtracks, this one looks at the token after the matching `)`: a comparison or arithmetic operator means
//! arithmetic, anything else a parenthesised condition. Both accept the same expressions.
//!
//! Paths resolve in the policy's context (`span` or `spanevent`), with the context prefixes newer OTTL accepts
//! (`span.name`, `resource.attributes["k"]`, `instrumentation_scope.name` or `scope.name`, `spanevent.name`).

use regex::Regex;

use super::lexer::{tokenize, Tok, Token};
use super::{CmpOp, ContextKind};
use crate::policy::re2;

/// A parse error at a byte offset of the expression.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ParseError {
    pub at: usize,
    pub message: String,
}

type PResult<T> = Result<T, ParseError>;

#[derive(Debug, Clone)]
pub(crate) enum BoolExpr {
    Or(Vec<BoolExpr>),
    And(Vec<BoolExpr>),
    Not(Box<BoolExpr>),
    Const(bool),
    Compare {
        op: CmpOp,
        left: Value,
        right: Value,
    },
    /// A converter returning a boolean, used as a condition (`IsMatch(name, "^GET")`).
    Converter(Box<Call>),
}

#[derive(Debug, Clone)]
pub(crate) enum Value {
    Lit(Lit),
    Path(Path),
    Call(Box<Call>),
    Math(Box<Math>),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Lit {
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MathOp {
    Add,
    Sub,
    Mul,
    Div,
}

#[derive(Debug, Clone)]
pub(crate) struct Math {
    pub op: MathOp,
    pub left: Value,
    pub right: Value,
    /// The expression's text, for evaluation errors.
    pub text: String,
}

/// A path resolved to what it reads.
#[derive(Debug, Clone)]
pub(crate) enum Path {
    SpanName,
    SpanKind,
    /// `kind.string`: `ptrace.SpanKind.String()` ("Server", …).
    SpanKindString,
    /// `kind.deprecated_string`: "SPAN_KIND_SERVER", …
    SpanKindDeprecatedString,
    StatusCode,
    StartTimeUnixNano,
    EndTimeUnixNano,
    TraceState,
    TraceStateKey(String),
    TraceIdString,
    SpanIdString,
    ParentSpanIdString,
    ScopeName,
    /// `instrumentation_scope.version`.
    ScopeVersion,
    /// `status.message`.
    StatusMessage,
    EventName,
    Attr(Attr),
}

/// Where an attribute is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    Span,
    Resource,
    Event,
    /// The instrumentation scope's attributes (read from its raw bytes, not bound to the key set).
    Scope,
}

#[derive(Debug, Clone)]
pub(crate) struct Attr {
    pub source: Source,
    pub key: String,
    /// Index in the scanner's key set, set by `Condition::bind` (`usize::MAX` until then: reads as absent).
    pub index: usize,
    /// Indexes into the attribute's value (`attributes["k"][0]["x"]`), in order; empty for the value itself.
    pub path: Vec<Index>,
    /// The path's text (`attributes["k"][0]`), for evaluation errors.
    pub text: String,
}

/// One `[…]` into an attribute's value: a map key or a list position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Index {
    Key(String),
    At(i64),
}

#[derive(Debug, Clone)]
pub(crate) struct Call {
    pub func: Func,
    /// The first argument (for `Concat`, the delimiter).
    pub target: Value,
    /// The other arguments: `HasPrefix`'s prefix, `HasSuffix`'s suffix, `Concat`'s values.
    pub rest: Vec<Value>,
    /// The call's text, for evaluation errors.
    pub text: String,
}

#[derive(Debug, Clone)]
pub(crate) enum Func {
    /// The pattern compiled once (Go RE2 syntax translated, see `re2`).
    IsMatch(Regex),
    IsString,
    IsInt,
    IsDouble,
    IsBool,
    IsMap,
    IsList,
    Len,
    ToLowerCase,
    ToUpperCase,
    HasPrefix,
    HasSuffix,
    String,
    Concat,
    Int,
    Double,
    TrimPrefix,
    TrimSuffix,
    /// `Trim(target[, replacement])`: the characters to trim (a string literal, `" "` if not given).
    Trim(String),
}

/// The converters tailsample runs, for error messages.
pub(crate) const CONVERTERS: &str =
    "IsMatch, IsString, IsInt, IsDouble, IsBool, IsMap, IsList, Len, ToLowerCase, \
    ToUpperCase, HasPrefix, HasSuffix, String, Concat, Int, Double, Trim, TrimPrefix, TrimSuffix";

/// The span context's enum symbols (`ctxspan.SymbolTable`), also accepted in the span event context.
const ENUMS: &[(&str, i64)] = &[
    ("SPAN_KIND_UNSPECIFIED", 0),
    ("SPAN_KIND_INTERNAL", 1),
    ("SPAN_KIND_SERVER", 2),
    ("SPAN_KIND_CLIENT", 3),
    ("SPAN_KIND_PRODUCER", 4),
    ("SPAN_KIND_CONSUMER", 5),
    ("STATUS_CODE_UNSET", 0),
    ("STATUS_CODE_OK", 1),
    ("STATUS_CODE_ERROR", 2),
];

/// Deeper nesting than this is refused rather than risking the stack.
const MAX_DEPTH: usize = 128;

/// What a value is known to be when parsed, to refuse what can only fail at evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ty {
    Nil,
    Bool,
    Int,
    Float,
    Str,
    Bytes,
    /// An attribute, a trace state entry or arithmetic: known when evaluated.
    Any,
}

impl Ty {
    fn describe(self) -> &'static str {
        match self {
            Ty::Nil => "nil",
            Ty::Bool => "a boolean",
            Ty::Int => "an int",
            Ty::Float => "a float",
            Ty::Str => "a string",
            Ty::Bytes => "bytes",
            Ty::Any => "a value",
        }
    }
}

fn ty(v: &Value) -> Ty {
    match v {
        Value::Lit(Lit::Nil) => Ty::Nil,
        Value::Lit(Lit::Bool(_)) => Ty::Bool,
        Value::Lit(Lit::Int(_)) => Ty::Int,
        Value::Lit(Lit::Float(_)) => Ty::Float,
        Value::Lit(Lit::Str(_)) => Ty::Str,
        Value::Lit(Lit::Bytes(_)) => Ty::Bytes,
        Value::Path(p) => match p {
            Path::SpanKind | Path::StatusCode | Path::StartTimeUnixNano | Path::EndTimeUnixNano => {
                Ty::Int
            }
            Path::TraceStateKey(_) | Path::Attr(_) => Ty::Any,
            _ => Ty::Str,
        },
        Value::Call(c) => call_ty(c),
        Value::Math(_) => Ty::Any,
    }
}

fn call_ty(c: &Call) -> Ty {
    match c.func {
        Func::Len => Ty::Int,
        Func::ToLowerCase
        | Func::ToUpperCase
        | Func::Concat
        | Func::Trim(_)
        | Func::TrimPrefix
        | Func::TrimSuffix => Ty::Str,
        // nil for a nil target.
        Func::String | Func::Int | Func::Double => Ty::Any,
        _ => Ty::Bool,
    }
}

pub(crate) fn parse(src: &str, kind: ContextKind) -> PResult<BoolExpr> {
    let toks = tokenize(src).map_err(|e| ParseError {
        at: e.at,
        message: e.message,
    })?;
    let mut p = Parser {
        src,
        toks,
        pos: 0,
        kind,
        depth: 0,
    };
    if p.peek().tok == Tok::Eof {
        return p.fail(0, "empty condition");
    }
    if p.peek().tok == Tok::Word && p.peek().text == "where" {
        return p.fail(
            p.peek().start,
            "`where` introduces the condition of a statement; an ottl_condition is the condition alone",
        );
    }
    let e = p.condition()?;
    let t = p.peek();
    match t.tok {
        Tok::Eof => Ok(e),
        Tok::RParen => p.fail(t.start, "unexpected `)`: there is no `(` to close"),
        Tok::Word if t.text == "where" => p.fail(
            t.start,
            "unexpected `where`: an ottl_condition is a condition only, not a statement",
        ),
        _ => p.fail(
            t.start,
            format!(
                "unexpected {} after a complete condition (join conditions with `and` or `or`)",
                t.describe()
            ),
        ),
    }
}

struct Parser<'s> {
    src: &'s str,
    toks: Vec<Token<'s>>,
    pos: usize,
    kind: ContextKind,
    depth: usize,
}

/// One `name["key"]...` segment of a path.
struct Seg<'s> {
    name: &'s str,
    at: usize,
    keys: Vec<(Key, usize)>,
}

enum Key {
    Str(String),
    Int(i64),
}

/// One argument of a converter call: its name if given (`name = value`), its value, where it starts.
struct Arg<'s> {
    name: Option<(&'s str, usize)>,
    value: Value,
    /// A list literal (`[a, b]`), which only `Concat` takes.
    list: Option<Vec<Value>>,
    at: usize,
}

fn is_enum_word(w: &str) -> bool {
    w.starts_with(|c: char| c.is_ascii_uppercase())
        && w.bytes()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == b'_')
}

fn math_op(t: &Tok) -> Option<MathOp> {
    match t {
        Tok::Plus => Some(MathOp::Add),
        Tok::Minus => Some(MathOp::Sub),
        Tok::Star => Some(MathOp::Mul),
        Tok::Slash => Some(MathOp::Div),
        _ => None,
    }
}

fn can_start_value(t: &Tok) -> bool {
    matches!(
        t,
        Tok::Nil
            | Tok::Str(_)
            | Tok::True
            | Tok::False
            | Tok::Bytes(_)
            | Tok::Int(_)
            | Tok::Float(_)
            | Tok::Word
            | Tok::LParen
            | Tok::LBracket
            | Tok::LBrace
            | Tok::Minus
            | Tok::Plus
    )
}

impl<'s> Parser<'s> {
    fn peek(&self) -> &Token<'s> {
        &self.toks[self.pos]
    }

    fn peek_at(&self, n: usize) -> &Token<'s> {
        &self.toks[(self.pos + n).min(self.toks.len() - 1)]
    }

    fn bump(&mut self) -> Token<'s> {
        let t = self.toks[self.pos].clone();
        if self.pos + 1 < self.toks.len() {
            self.pos += 1;
        }
        t
    }

    fn eat(&mut self, tok: &Tok) -> bool {
        if self.peek().tok == *tok {
            self.bump();
            true
        } else {
            false
        }
    }

    /// End of the last consumed token.
    fn last_end(&self) -> usize {
        if self.pos == 0 {
            0
        } else {
            self.toks[self.pos - 1].end
        }
    }

    fn char_pos(&self, byte: usize) -> usize {
        self.src[..byte].chars().count()
    }

    fn fail<T>(&self, at: usize, message: impl Into<String>) -> PResult<T> {
        Err(ParseError {
            at,
            message: message.into(),
        })
    }

    fn enter(&mut self, at: usize) -> PResult<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return self.fail(at, format!("nested deeper than {MAX_DEPTH} levels"));
        }
        Ok(())
    }

    fn expect_close(&mut self, open: &Token<'s>) -> PResult<()> {
        if self.eat(&Tok::RParen) {
            return Ok(());
        }
        let t = self.peek();
        self.fail(
            t.start,
            format!(
                "expected `)` to close the `(` at position {}, found {}",
                self.char_pos(open.start),
                t.describe()
            ),
        )
    }

    fn condition(&mut self) -> PResult<BoolExpr> {
        let mut items = vec![self.term()?];
        while self.eat(&Tok::Or) {
            items.push(self.term()?);
        }
        Ok(if items.len() == 1 {
            items.pop().expect("one item")
        } else {
            BoolExpr::Or(items)
        })
    }

    fn term(&mut self) -> PResult<BoolExpr> {
        let mut items = vec![self.boolean()?];
        while self.eat(&Tok::And) {
            items.push(self.boolean()?);
        }
        Ok(if items.len() == 1 {
            items.pop().expect("one item")
        } else {
            BoolExpr::And(items)
        })
    }

    fn boolean(&mut self) -> PResult<BoolExpr> {
        let negate = self.eat(&Tok::Not);
        let t = self.peek().clone();
        if negate && t.tok == Tok::Not {
            return self.fail(t.start, "`not` cannot follow `not`; write `not (not …)`");
        }
        if !can_start_value(&t.tok) {
            let after = if negate { " after `not`" } else { "" };
            return self.fail(
                t.start,
                format!(
                    "expected a condition{after} (a comparison, true or false, a converter call or a parenthesised \
                     condition), found {}",
                    t.describe()
                ),
            );
        }
        self.enter(t.start)?;
        let inner = if t.tok == Tok::LParen && !self.paren_is_arithmetic() {
            let open = self.bump();
            let e = self.condition()?;
            self.expect_close(&open)?;
            e
        } else {
            self.comparison_or_constant()?
        };
        self.depth -= 1;
        Ok(if negate {
            BoolExpr::Not(Box::new(inner))
        } else {
            inner
        })
    }

    /// At a `(`: whether the token after its matching `)` continues a value (a comparison or arithmetic).
    fn paren_is_arithmetic(&self) -> bool {
        let mut depth = 0usize;
        for (k, t) in self.toks[self.pos..].iter().enumerate() {
            match t.tok {
                Tok::LParen => depth += 1,
                Tok::RParen => {
                    depth -= 1;
                    if depth == 0 {
                        let next = &self.peek_at(k + 1).tok;
                        return matches!(next, Tok::Cmp(_)) || math_op(next).is_some();
                    }
                }
                Tok::Eof => return false,
                _ => {}
            }
        }
        false
    }

    fn comparison_or_constant(&mut self) -> PResult<BoolExpr> {
        let start = self.peek().start;
        let left = self.value()?;
        if let Tok::Cmp(op) = self.peek().tok {
            let op_tok = self.bump();
            if !can_start_value(&self.peek().tok) {
                let t = self.peek();
                return self.fail(
                    t.start,
                    format!(
                        "expected a value after `{}`, found {}",
                        op_tok.text,
                        t.describe()
                    ),
                );
            }
            let right = self.value()?;
            return Ok(BoolExpr::Compare { op, left, right });
        }
        let text = &self.src[start..self.last_end()];
        match left {
            Value::Lit(Lit::Bool(b)) if !text.starts_with('(') => Ok(BoolExpr::Const(b)),
            Value::Call(c) if call_ty(&c) == Ty::Bool && !text.starts_with('(') => {
                Ok(BoolExpr::Converter(c))
            }
            Value::Call(c) if matches!(c.func, Func::Len) && !text.starts_with('(') => self.fail(
                start,
                format!("`{text}` returns an int, not a boolean: compare it, e.g. `{text} > 0`"),
            ),
            Value::Call(_) if !text.starts_with('(') => self.fail(
                start,
                format!(
                    "`{text}` returns a string, not a boolean: compare it, e.g. `{text} == \"x\"`"
                ),
            ),
            _ => {
                let t = self.peek();
                let message = match t.tok {
                    Tok::Assign => "`=` is not a comparison; compare with `==`".to_string(),
                    Tok::Int(_) | Tok::Float(_) if t.text.starts_with(['-', '+']) => format!(
                        "expected a comparison operator after `{text}`, found `{}`: OTTL reads `{}` as a signed \
                         number; to add or subtract, put a space after the sign (`{} {}`)",
                        t.text,
                        t.text,
                        &t.text[..1],
                        &t.text[1..]
                    ),
                    Tok::Eof | Tok::And | Tok::Or | Tok::RParen => format!(
                        "`{text}` is not a condition: compare it (==, !=, <, <=, >, >=) or use a converter that \
                         returns a boolean"
                    ),
                    _ => format!(
                        "expected a comparison operator (==, !=, <, <=, >, >=) after `{text}`, found {}",
                        t.describe()
                    ),
                };
                self.fail(t.start, message)
            }
        }
    }

    fn value(&mut self) -> PResult<Value> {
        let t = self.peek().clone();
        let v = match &t.tok {
            Tok::Nil => Value::Lit(Lit::Nil),
            Tok::Str(s) => Value::Lit(Lit::Str(s.clone())),
            Tok::True => Value::Lit(Lit::Bool(true)),
            Tok::False => Value::Lit(Lit::Bool(false)),
            Tok::Bytes(b) => Value::Lit(Lit::Bytes(b.clone())),
            Tok::LBracket => {
                return self.fail(
                    t.start,
                    "list values (`[…]`) are not supported in conditions",
                )
            }
            Tok::LBrace => {
                return self.fail(
                    t.start,
                    "map values (`{…}`) are not supported in conditions",
                )
            }
            Tok::Word if is_enum_word(t.text) && self.peek_at(1).tok != Tok::LParen => {
                let lower = t.text.to_ascii_lowercase();
                match ENUMS.iter().find(|(name, _)| *name == t.text) {
                    Some(&(_, v)) => Value::Lit(Lit::Int(v)),
                    None if matches!(
                        lower.as_str(),
                        "true" | "false" | "nil" | "and" | "or" | "not"
                    ) =>
                    {
                        return self.fail(
                            t.start,
                            format!(
                                "`{}` is not OTTL: keywords and booleans are lowercase (`{lower}`)",
                                t.text
                            ),
                        )
                    }
                    None => {
                        return self.fail(
                            t.start,
                            format!(
                                "unknown enum `{}`; known: {}",
                                t.text,
                                ENUMS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
                            ),
                        )
                    }
                }
            }
            _ => return self.math(),
        };
        self.bump();
        if let Some(op) = math_op(&self.peek().tok) {
            let op_tok = self.peek();
            return self.fail(
                op_tok.start,
                format!(
                    "`{}` needs numbers, paths or converters on both sides; `{}` is {}",
                    op_tok.text,
                    t.text,
                    if op == MathOp::Add && matches!(t.tok, Tok::Str(_)) {
                        "a string (OTTL has no string concatenation in conditions)"
                    } else {
                        ty(&v).describe()
                    }
                ),
            );
        }
        Ok(v)
    }

    fn math(&mut self) -> PResult<Value> {
        let start = self.peek().start;
        let mut left = self.product()?;
        while let Some(op @ (MathOp::Add | MathOp::Sub)) = math_op(&self.peek().tok) {
            self.bump();
            let right = self.product()?;
            left = self.arithmetic(op, left, right, start)?;
        }
        Ok(left)
    }

    fn product(&mut self) -> PResult<Value> {
        let start = self.peek().start;
        let mut left = self.operand()?;
        while let Some(op @ (MathOp::Mul | MathOp::Div)) = math_op(&self.peek().tok) {
            self.bump();
            let right = self.operand()?;
            left = self.arithmetic(op, left, right, start)?;
        }
        Ok(left)
    }

    fn arithmetic(&self, op: MathOp, left: Value, right: Value, start: usize) -> PResult<Value> {
        let text = self.src[start..self.last_end()].to_string();
        for side in [&left, &right] {
            let t = ty(side);
            if !matches!(t, Ty::Int | Ty::Float | Ty::Any) {
                return self.fail(
                    start,
                    format!(
                        "arithmetic needs numbers, but `{text}` has {} operand",
                        t.describe()
                    ),
                );
            }
        }
        Ok(Value::Math(Box::new(Math {
            op,
            left,
            right,
            text,
        })))
    }

    fn operand(&mut self) -> PResult<Value> {
        let t = self.peek().clone();
        match &t.tok {
            Tok::LParen => {
                self.enter(t.start)?;
                let open = self.bump();
                let v = self.math()?;
                self.expect_close(&open)?;
                self.depth -= 1;
                Ok(v)
            }
            Tok::Int(i) => {
                self.bump();
                Ok(Value::Lit(Lit::Int(*i)))
            }
            Tok::Float(f) => {
                self.bump();
                Ok(Value::Lit(Lit::Float(*f)))
            }
            Tok::Word => {
                let called = self.peek_at(1).tok == Tok::LParen;
                let upper = t.text.starts_with(|c: char| c.is_ascii_uppercase());
                match (called, upper) {
                    (true, true) => self.call(),
                    (true, false) => {
                        let capitalised = format!("{}{}", t.text[..1].to_ascii_uppercase(), &t.text[1..]);
                        if CONVERTERS.split(", ").any(|c| c == capitalised) {
                            self.fail(
                                t.start,
                                format!(
                                    "converter names start with an uppercase letter: did you mean `{capitalised}`?"
                                ),
                            )
                        } else {
                            self.fail(
                                t.start,
                                format!(
                                    "`{}(…)` is an editor call (a statement that changes telemetry); a condition can \
                                     only call converters ({CONVERTERS})",
                                    t.text
                                ),
                            )
                        }
                    }
                    (false, true) if is_enum_word(t.text) => self.fail(
                        t.start,
                        format!("enum `{}` cannot be used in arithmetic", t.text),
                    ),
                    (false, true) => self.fail(
                        t.start,
                        format!(
                            "unknown name `{}`: converters are called with parentheses, enums are all capitals",
                            t.text
                        ),
                    ),
                    (false, false) => self.path(),
                }
            }
            Tok::Minus | Tok::Plus => self.fail(
                t.start,
                format!(
                    "expected a value, found {}: there is no unary sign; a negative number is written `-1`",
                    t.describe()
                ),
            ),
            Tok::Str(_) | Tok::True | Tok::False | Tok::Nil | Tok::Bytes(_) => self.fail(
                t.start,
                format!(
                    "{} cannot be used in arithmetic (numbers, paths and converters only)",
                    t.describe()
                ),
            ),
            _ => self.fail(t.start, format!("expected a value, found {}", t.describe())),
        }
    }

    fn call(&mut self) -> PResult<Value> {
        let name_tok = self.bump();
        let open = self.bump();
        self.enter(open.start)?;
        let mut args: Vec<Arg<'s>> = Vec::new();
        if !self.eat(&Tok::RParen) {
            loop {
                let at = self.peek().start;
                let arg_name = if self.peek().tok == Tok::Word && self.peek_at(1).tok == Tok::Assign
                {
                    let n = self.bump();
                    self.bump();
                    Some((n.text, n.start))
                } else {
                    None
                };
                if arg_name.is_none() && args.iter().any(|a| a.name.is_some()) {
                    return self.fail(at, "an unnamed argument cannot follow a named one");
                }
                if !can_start_value(&self.peek().tok) {
                    let t = self.peek();
                    return self.fail(
                        t.start,
                        format!(
                            "expected an argument of `{}`, found {}",
                            name_tok.text,
                            t.describe()
                        ),
                    );
                }
                let (v, list) = if self.peek().tok == Tok::LBracket {
                    (Value::Lit(Lit::Nil), Some(self.list_literal()?))
                } else {
                    (self.value()?, None)
                };
                args.push(Arg {
                    name: arg_name,
                    value: v,
                    list,
                    at,
                });
                if self.eat(&Tok::Comma) {
                    continue;
                }
                if self.eat(&Tok::RParen) {
                    break;
                }
                let t = self.peek();
                return self.fail(
                    t.start,
                    format!(
                        "expected `,` or `)` in the arguments of `{}`, found {}",
                        name_tok.text,
                        t.describe()
                    ),
                );
            }
        }
        self.depth -= 1;
        if self.peek().tok == Tok::LBracket {
            return self.fail(
                self.peek().start,
                format!(
                    "indexing the result of a converter (`{}(…)[…]`) is not supported",
                    name_tok.text
                ),
            );
        }
        let text = self.src[name_tok.start..self.last_end()].to_string();
        self.build_call(&name_tok, args, text)
    }

    /// `[value, value, ...]`, as a converter's argument.
    fn list_literal(&mut self) -> PResult<Vec<Value>> {
        let open = self.bump();
        self.enter(open.start)?;
        let mut items = Vec::new();
        if !self.eat(&Tok::RBracket) {
            loop {
                if self.peek().tok == Tok::LBracket {
                    return self.fail(self.peek().start, "lists inside lists are not supported");
                }
                items.push(self.value()?);
                if self.eat(&Tok::Comma) {
                    continue;
                }
                if self.eat(&Tok::RBracket) {
                    break;
                }
                let t = self.peek();
                return self.fail(
                    t.start,
                    format!(
                        "expected `,` or `]` in the list opened at position {}, found {}",
                        self.char_pos(open.start),
                        t.describe()
                    ),
                );
            }
        }
        self.depth -= 1;
        Ok(items)
    }

    fn build_call(&self, name: &Token<'s>, args: Vec<Arg<'s>>, text: String) -> PResult<Value> {
        let params: &[&str] = match name.text {
            "IsMatch" => &["target", "pattern"],
            "IsString" | "IsInt" | "IsDouble" | "IsBool" | "IsMap" | "IsList" | "Len"
            | "ToLowerCase" | "ToUpperCase" | "String" | "Int" | "Double" => &["target"],
            "HasPrefix" | "TrimPrefix" => &["target", "prefix"],
            "HasSuffix" | "TrimSuffix" => &["target", "suffix"],
            "Trim" => &["target", "replacement"],
            "Concat" => &["vals", "delimiter"],
            other => {
                return self.fail(
                    name.start,
                    format!(
                        "unknown converter `{other}`; tailsample's conditions support {CONVERTERS}"
                    ),
                )
            }
        };
        // Trim's replacement is optional (`ottl.Optional`).
        let required = if name.text == "Trim" { 1 } else { params.len() };
        if args.len() < required || args.len() > params.len() {
            return self.fail(
                name.start,
                format!(
                    "{} takes {} argument{} ({}), got {}",
                    name.text,
                    if required < params.len() {
                        format!("{required} or {}", params.len())
                    } else {
                        params.len().to_string()
                    },
                    if params.len() == 1 { "" } else { "s" },
                    params.join(", "),
                    args.len()
                ),
            );
        }
        let mut slots: Vec<Option<(Value, usize)>> = vec![None; params.len()];
        let mut vals: Option<Vec<Value>> = None;
        for (
            i,
            Arg {
                name: arg_name,
                value: v,
                list,
                at,
            },
        ) in args.into_iter().enumerate()
        {
            let k = match arg_name {
                None => i,
                Some((n, n_at)) => match params.iter().position(|p| *p == n) {
                    Some(k) => k,
                    None => {
                        return self.fail(
                            n_at,
                            format!(
                                "{} has no parameter `{n}`; its parameters: {}",
                                name.text,
                                params.join(", ")
                            ),
                        )
                    }
                },
            };
            if slots[k].is_some() {
                return self.fail(at, format!("parameter `{}` is given twice", params[k]));
            }
            let wants_list = params[k] == "vals";
            match (list, wants_list) {
                (Some(items), true) => vals = Some(items),
                (None, true) => {
                    return self.fail(
                        at,
                        "the values of Concat are a list literal, e.g. `Concat([name, attributes[\"k\"]], \"-\")`",
                    )
                }
                (Some(_), false) => {
                    return self.fail(
                        at,
                        format!("`{}` of {} is not a list", params[k], name.text),
                    )
                }
                (None, false) => {}
            }
            slots[k] = Some((v, at));
        }
        if name.text == "Trim" {
            let Some((target, _)) = slots[0].take() else {
                return self.fail(name.start, "Trim needs its `target`");
            };
            let cutset = match slots[1].take() {
                None => " ".to_string(),
                Some((Value::Lit(Lit::Str(s)), _)) => s,
                Some((_, at)) => {
                    return self.fail(at, "the replacement of Trim must be a string literal")
                }
            };
            return Ok(Value::Call(Box::new(Call {
                func: Func::Trim(cutset),
                target,
                rest: Vec::new(),
                text,
            })));
        }
        let mut slots = slots.into_iter().map(|s| s.expect("every parameter given"));
        let (mut target, target_at) = slots.next().expect("a target");
        let mut rest = Vec::new();
        let func = match name.text {
            "IsMatch" => {
                let (pattern, at) = slots.next().expect("a pattern");
                let Value::Lit(Lit::Str(pattern)) = pattern else {
                    return self.fail(
                        at,
                        "the pattern of IsMatch must be a string literal (it is compiled once, when the condition \
                         is parsed)",
                    );
                };
                let regex = re2::compile(&pattern).map_err(|why| ParseError {
                    at,
                    message: format!("invalid regular expression {pattern:?} in IsMatch: {why}"),
                })?;
                Func::IsMatch(regex)
            }
            "IsString" => Func::IsString,
            "IsInt" => Func::IsInt,
            "IsDouble" => Func::IsDouble,
            "IsBool" => Func::IsBool,
            "IsMap" => Func::IsMap,
            "IsList" => Func::IsList,
            "ToLowerCase" => Func::ToLowerCase,
            "ToUpperCase" => Func::ToUpperCase,
            "String" => Func::String,
            "Int" => Func::Int,
            "Double" => Func::Double,
            "HasPrefix" | "HasSuffix" | "TrimPrefix" | "TrimSuffix" => {
                rest.push(slots.next().expect("a prefix or suffix").0);
                match name.text {
                    "HasPrefix" => Func::HasPrefix,
                    "HasSuffix" => Func::HasSuffix,
                    "TrimPrefix" => Func::TrimPrefix,
                    _ => Func::TrimSuffix,
                }
            }
            "Concat" => {
                rest = vals.take().unwrap_or_default();
                // The delimiter goes in `target`.
                target = slots.next().expect("a delimiter").0;
                Func::Concat
            }
            _ => {
                let t = ty(&target);
                if matches!(t, Ty::Nil | Ty::Bool | Ty::Int | Ty::Float) {
                    return self.fail(
                        target_at,
                        format!(
                            "Len takes a string, bytes, a map or a list; its argument is {}",
                            t.describe()
                        ),
                    );
                }
                Func::Len
            }
        };
        Ok(Value::Call(Box::new(Call {
            func,
            target,
            rest,
            text,
        })))
    }

    fn path(&mut self) -> PResult<Value> {
        let start = self.peek().start;
        let mut segs = Vec::new();
        loop {
            let t = self.bump();
            if t.tok != Tok::Word {
                return self.fail(
                    t.start,
                    format!("expected a path segment after `.`, found {}", t.describe()),
                );
            }
            if !t
                .text
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')
            {
                return self.fail(
                    t.start,
                    format!("path segments are lowercase (`{}`)", t.text),
                );
            }
            let mut keys = Vec::new();
            while self.peek().tok == Tok::LBracket {
                let open = self.bump();
                let k = self.bump();
                let key = match k.tok {
                    Tok::Str(s) => Key::Str(s),
                    Tok::Int(i) => Key::Int(i),
                    _ => {
                        return self.fail(
                            k.start,
                            format!(
                                "expected a string or int key in `[…]`, found {} (keys computed from other values \
                                 are not supported)",
                                k.describe()
                            ),
                        )
                    }
                };
                if !self.eat(&Tok::RBracket) {
                    let t = self.peek();
                    return self.fail(
                        t.start,
                        format!(
                            "expected `]` to close the `[` at position {}, found {}",
                            self.char_pos(open.start),
                            t.describe()
                        ),
                    );
                }
                keys.push((key, open.start));
            }
            segs.push(Seg {
                name: t.text,
                at: t.start,
                keys,
            });
            if !self.eat(&Tok::Dot) {
                break;
            }
        }
        let text = &self.src[start..self.last_end()];
        Ok(Value::Path(self.resolve(&segs, text)?))
    }

    fn resolve(&self, segs: &[Seg<'s>], text: &str) -> PResult<Path> {
        let (default, contexts): (&str, &[&str]) = match self.kind {
            ContextKind::Span => (
                "span",
                &["span", "resource", "scope", "instrumentation_scope"],
            ),
            ContextKind::SpanEvent => (
                "spanevent",
                &[
                    "spanevent",
                    "span",
                    "resource",
                    "scope",
                    "instrumentation_scope",
                ],
            ),
        };
        let first = &segs[0];
        let (context, rest) =
            if segs.len() > 1 && first.keys.is_empty() && contexts.contains(&first.name) {
                (first.name, &segs[1..])
            } else {
                (default, segs)
            };
        match context {
            "span" => self.span_path(rest, text),
            "resource" => self.resource_path(rest, text),
            "scope" | "instrumentation_scope" => self.scope_path(rest, text),
            _ => self.event_path(rest, text),
        }
    }

    fn unknown(&self, seg: &Seg<'_>, text: &str, context: &str, known: &str) -> PResult<Path> {
        self.fail(
            seg.at,
            format!("unknown path `{text}` in the {context} context; tailsample supports: {known}"),
        )
    }

    fn unsupported(&self, seg: &Seg<'_>, text: &str, hint: &str) -> PResult<Path> {
        self.fail(
            seg.at,
            format!("`{text}` is an OTTL path tailsample's conditions do not read{hint}"),
        )
    }

    /// `segs` is exactly `n` segments, none indexed.
    fn plain(&self, segs: &[Seg<'_>], n: usize, path: Path) -> PResult<Path> {
        if let Some(extra) = segs.get(n) {
            return self.fail(
                extra.at,
                format!("`{}` has no field `{}`", segs[n - 1].name, extra.name),
            );
        }
        if let Some(s) = segs[..n].iter().find(|s| !s.keys.is_empty()) {
            return self.fail(s.keys[0].1, format!("`{}` cannot be indexed", s.name));
        }
        Ok(path)
    }

    fn attribute(&self, segs: &[Seg<'_>], source: Source, text: &str) -> PResult<Path> {
        let seg = &segs[0];
        if let Some(extra) = segs.get(1) {
            return self.fail(
                extra.at,
                format!("`attributes` has no field `{}`", extra.name),
            );
        }
        match seg.keys.as_slice() {
            [] => self.fail(
                seg.at,
                "`attributes` without a key (the whole map) is not supported; read one attribute with \
                 `attributes[\"key\"]`",
            ),
            [(Key::Str(k), _), rest @ ..] => Ok(Path::Attr(Attr {
                source,
                key: k.clone(),
                index: usize::MAX,
                // Further keys index into the value: a string into a map, an int into a list (checked when
                // evaluated, as OTTL does: the value's type is known only then).
                path: rest
                    .iter()
                    .map(|(k, _)| match k {
                        Key::Str(s) => Index::Key(s.clone()),
                        Key::Int(i) => Index::At(*i),
                    })
                    .collect(),
                text: text.to_string(),
            })),
            [(Key::Int(i), at), ..] => self.fail(
                *at,
                format!(
                    "attributes are indexed by a string key, not an int (`[{i}]`), e.g. `attributes[\"http.method\"]`"
                ),
            ),
        }
    }

    fn span_path(&self, segs: &[Seg<'_>], text: &str) -> PResult<Path> {
        const KNOWN: &str = "name, kind, kind.string, kind.deprecated_string, status.code, status.message, \
            attributes[\"…\"], resource.attributes[\"…\"], instrumentation_scope.name, instrumentation_scope.version, \
            instrumentation_scope.attributes[\"…\"], trace_state, trace_state[\"…\"], \
            start_time_unix_nano, end_time_unix_nano, trace_id.string, span_id.string, parent_span_id.string";
        let seg = &segs[0];
        let field = segs.get(1).map(|s| s.name);
        match (seg.name, field) {
            ("name", _) => self.plain(segs, 1, Path::SpanName),
            ("kind", None) => self.plain(segs, 1, Path::SpanKind),
            ("kind", Some("string")) => self.plain(segs, 2, Path::SpanKindString),
            ("kind", Some("deprecated_string")) => {
                self.plain(segs, 2, Path::SpanKindDeprecatedString)
            }
            ("status", Some("code")) => self.plain(segs, 2, Path::StatusCode),
            ("status", Some("message")) => self.plain(segs, 2, Path::StatusMessage),
            ("status", None) => self.unsupported(seg, text, "; compare `status.code`"),
            ("start_time_unix_nano", _) => self.plain(segs, 1, Path::StartTimeUnixNano),
            ("end_time_unix_nano", _) => self.plain(segs, 1, Path::EndTimeUnixNano),
            ("start_time" | "end_time", None) => {
                self.unsupported(seg, text, &format!("; use `{}_unix_nano`", seg.name))
            }
            ("attributes", _) => self.attribute(segs, Source::Span, text),
            ("trace_state", _) => {
                if let Some(extra) = segs.get(1) {
                    return self.fail(extra.at, format!("`trace_state` has no field `{}`", extra.name));
                }
                match seg.keys.as_slice() {
                    [] => Ok(Path::TraceState),
                    [(Key::Str(k), _)] => Ok(Path::TraceStateKey(k.clone())),
                    [(_, at), ..] => self.fail(*at, "trace_state takes exactly one string key"),
                }
            }
            ("trace_id", Some("string")) => self.plain(segs, 2, Path::TraceIdString),
            ("span_id", Some("string")) => self.plain(segs, 2, Path::SpanIdString),
            ("parent_span_id", Some("string")) => self.plain(segs, 2, Path::ParentSpanIdString),
            ("trace_id" | "span_id" | "parent_span_id", None) => {
                self.unsupported(seg, text, &format!("; compare its hex form `{}.string`", seg.name))
            }
            (
                "dropped_attributes_count" | "events" | "dropped_events_count" | "links"
                | "dropped_links_count" | "cache" | "flags",
                None,
            ) => self.unsupported(seg, text, ""),
            ("spanevent", _) if self.kind == ContextKind::Span => self.fail(
                seg.at,
                format!(
                    "`{text}`: the span context has no span event paths; conditions on events belong in the \
                     policy's `spanevent` list"
                ),
            ),
            (_, Some(f))
                if matches!(
                    seg.name,
                    "name" | "kind" | "status" | "trace_id" | "span_id" | "parent_span_id"
                ) =>
            {
                self.fail(segs[1].at, format!("`{}` has no field `{f}`", seg.name))
            }
            _ => self.unknown(seg, text, "span", KNOWN),
        }
    }

    fn resource_path(&self, segs: &[Seg<'_>], text: &str) -> PResult<Path> {
        let seg = &segs[0];
        match seg.name {
            "attributes" => self.attribute(segs, Source::Resource, text),
            "dropped_attributes_count" | "schema_url" => self.unsupported(seg, text, ""),
            _ => self.unknown(seg, text, "resource", "resource.attributes[\"…\"]"),
        }
    }

    fn scope_path(&self, segs: &[Seg<'_>], text: &str) -> PResult<Path> {
        let seg = &segs[0];
        match seg.name {
            "name" => self.plain(segs, 1, Path::ScopeName),
            "version" => self.plain(segs, 1, Path::ScopeVersion),
            "attributes" => self.attribute(segs, Source::Scope, text),
            "dropped_attributes_count" | "schema_url" => self.unsupported(seg, text, ""),
            _ => self.unknown(
                seg,
                text,
                "instrumentation scope",
                "instrumentation_scope.name, instrumentation_scope.version, instrumentation_scope.attributes[\"…\"]",
            ),
        }
    }

    fn event_path(&self, segs: &[Seg<'_>], text: &str) -> PResult<Path> {
        const KNOWN: &str =
            "name, attributes[\"…\"], span.<any span path>, resource.attributes[\"…\"], \
            instrumentation_scope.name, instrumentation_scope.version, instrumentation_scope.attributes[\"…\"]";
        let seg = &segs[0];
        match seg.name {
            "name" => self.plain(segs, 1, Path::EventName),
            "attributes" => self.attribute(segs, Source::Event, text),
            "time_unix_nano" | "time" | "dropped_attributes_count" | "event_index" | "cache" => {
                self.unsupported(seg, text, "")
            }
            _ if self.span_path(segs, text).is_ok() => self.fail(
                seg.at,
                format!(
                    "unknown path `{text}` in the spanevent context; the span's field is `span.{text}`"
                ),
            ),
            _ => self.unknown(seg, text, "spanevent", KNOWN),
        }
    }
}

impl BoolExpr {
    /// Calls `f` on every attribute read, in the order written.
    pub(crate) fn visit_attrs(&self, f: &mut impl FnMut(&Attr)) {
        match self {
            BoolExpr::Or(items) | BoolExpr::And(items) => {
                items.iter().for_each(|e| e.visit_attrs(f))
            }
            BoolExpr::Not(e) => e.visit_attrs(f),
            BoolExpr::Const(_) => {}
            BoolExpr::Compare { left, right, .. } => {
                left.visit_attrs(f);
                right.visit_attrs(f);
            }
            BoolExpr::Converter(c) => c.visit_attrs(f),
        }
    }

    pub(crate) fn visit_attrs_mut(&mut self, f: &mut impl FnMut(&mut Attr)) {
        match self {
            BoolExpr::Or(items) | BoolExpr::And(items) => {
                items.iter_mut().for_each(|e| e.visit_attrs_mut(f))
            }
            BoolExpr::Not(e) => e.visit_attrs_mut(f),
            BoolExpr::Const(_) => {}
            BoolExpr::Compare { left, right, .. } => {
                left.visit_attrs_mut(f);
                right.visit_attrs_mut(f);
            }
            BoolExpr::Converter(c) => c.visit_attrs_mut(f),
        }
    }
}

impl Call {
    fn visit_attrs(&self, f: &mut impl FnMut(&Attr)) {
        self.target.visit_attrs(f);
        self.rest.iter().for_each(|v| v.visit_attrs(f));
    }

    fn visit_attrs_mut(&mut self, f: &mut impl FnMut(&mut Attr)) {
        self.target.visit_attrs_mut(f);
        self.rest.iter_mut().for_each(|v| v.visit_attrs_mut(f));
    }
}

impl Value {
    fn visit_attrs(&self, f: &mut impl FnMut(&Attr)) {
        match self {
            Value::Lit(_) => {}
            Value::Path(Path::Attr(a)) => f(a),
            Value::Path(_) => {}
            Value::Call(c) => c.visit_attrs(f),
            Value::Math(m) => {
                m.left.visit_attrs(f);
                m.right.visit_attrs(f);
            }
        }
    }

    fn visit_attrs_mut(&mut self, f: &mut impl FnMut(&mut Attr)) {
        match self {
            Value::Lit(_) => {}
            Value::Path(Path::Attr(a)) => f(a),
            Value::Path(_) => {}
            Value::Call(c) => c.visit_attrs_mut(f),
            Value::Math(m) => {
                m.left.visit_attrs_mut(f);
                m.right.visit_attrs_mut(f);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A compact rendering of a parsed tree, to compare shapes.
    fn show(e: &BoolExpr) -> String {
        let list = |v: &[BoolExpr]| v.iter().map(show).collect::<Vec<_>>().join(", ");
        match e {
            BoolExpr::Or(v) => format!("or({})", list(v)),
            BoolExpr::And(v) => format!("and({})", list(v)),
            BoolExpr::Not(e) => format!("not({})", show(e)),
            BoolExpr::Const(b) => b.to_string(),
            BoolExpr::Compare { op, left, right } => {
                format!("{} {} {}", show_value(left), op.symbol(), show_value(right))
            }
            BoolExpr::Converter(c) => show_call(c),
        }
    }

    fn show_value(v: &Value) -> String {
        match v {
            Value::Lit(Lit::Nil) => "nil".into(),
            Value::Lit(Lit::Bool(b)) => b.to_string(),
            Value::Lit(Lit::Int(i)) => format!("{i}i"),
            Value::Lit(Lit::Float(f)) => format!("{f:?}f"),
            Value::Lit(Lit::Str(s)) => format!("{s:?}"),
            Value::Lit(Lit::Bytes(b)) => {
                format!(
                    "0x{}",
                    b.iter().map(|x| format!("{x:02x}")).collect::<String>()
                )
            }
            Value::Path(Path::Attr(a)) => format!("{:?}[{:?}]", a.source, a.key),
            Value::Path(Path::TraceStateKey(k)) => format!("TraceState[{k:?}]"),
            Value::Path(p) => format!("{p:?}"),
            Value::Call(c) => show_call(c),
            Value::Math(m) => {
                let op = match m.op {
                    MathOp::Add => "+",
                    MathOp::Sub => "-",
                    MathOp::Mul => "*",
                    MathOp::Div => "/",
                };
                format!("({} {op} {})", show_value(&m.left), show_value(&m.right))
            }
        }
    }

    fn show_call(c: &Call) -> String {
        let name = match &c.func {
            Func::IsMatch(re) => {
                return format!("IsMatch({}, /{}/)", show_value(&c.target), re.as_str())
            }
            Func::IsString => "IsString",
            Func::IsInt => "IsInt",
            Func::IsDouble => "IsDouble",
            Func::IsBool => "IsBool",
            Func::IsMap => "IsMap",
            Func::IsList => "IsList",
            Func::Len => "Len",
            Func::ToLowerCase => "ToLowerCase",
            Func::ToUpperCase => "ToUpperCase",
            Func::HasPrefix => "HasPrefix",
            Func::HasSuffix => "HasSuffix",
            Func::String => "String",
            Func::Int => "Int",
            Func::Double => "Double",
            Func::TrimPrefix => "TrimPrefix",
            Func::TrimSuffix => "TrimSuffix",
            Func::Trim(cut) => return format!("Trim({}, {cut:?})", show_value(&c.target)),
            Func::Concat => {
                let items: Vec<String> = c.rest.iter().map(show_value).collect();
                return format!("Concat([{}], {})", items.join(", "), show_value(&c.target));
            }
        };
        let mut args = vec![show_value(&c.target)];
        args.extend(c.rest.iter().map(show_value));
        format!("{name}({})", args.join(", "))
    }

    fn span(src: &str) -> String {
        show(&parse(src, ContextKind::Span).unwrap_or_else(|e| panic!("{src}: {e:?}")))
    }

    fn spanevent(src: &str) -> String {
        show(&parse(src, ContextKind::SpanEvent).unwrap_or_else(|e| panic!("{src}: {e:?}")))
    }

    /// Scenario: a condition parsed in the span or spanevent context.
    /// Guarantees: the tree the reference's grammar gives (shown compactly).
    macro_rules! parse_cases {
        ($($name:ident: $ctx:ident $src:expr => $want:expr;)*) => {$(
            #[test]
            fn $name() {
                assert_eq!($ctx($src), $want);
            }
        )*};
    }

    parse_cases! {
        // Precedence and grouping.
        and_binds_tighter_than_or: span r#"name == "a" or kind == 1 and status.code == 2"#
            => r#"or(SpanName == "a", and(SpanKind == 1i, StatusCode == 2i))"#;
        parentheses_override: span r#"(name == "a" or kind == 1) and status.code == 2"#
            => r#"and(or(SpanName == "a", SpanKind == 1i), StatusCode == 2i)"#;
        chains_are_flat: span "true and false and true or false or true"
            => "or(and(true, false, true), false, true)";
        not_binds_tighter_than_and: span r#"not name == "a" and kind == 1"#
            => r#"and(not(SpanName == "a"), SpanKind == 1i)"#;
        not_of_comparison: span r#"not name == "a""# => r#"not(SpanName == "a")"#;
        not_of_group: span r#"not (name == "a" or kind == 1)"#
            => r#"not(or(SpanName == "a", SpanKind == 1i))"#;
        not_of_converter: span r#"not IsMatch(name, "x")"# => "not(IsMatch(SpanName, /x/))";
        nested_parentheses: span r#"((name == "a"))"# => r#"SpanName == "a""#;
        parenthesised_converter: span r#"(IsString(name))"# => "IsString(SpanName)";
        constants: span "true" => "true";
        constant_false: span "false" => "false";
        not_constant: span "not true" => "not(true)";
        constant_compared: span "true == false" => "true == false";
        converter_as_condition: span r#"IsMatch(name, "^GET")"# => "IsMatch(SpanName, /^GET/)";
        converter_compared: span r#"IsMatch(name, "^GET") == false"#
            => "IsMatch(SpanName, /^GET/) == false";
        every_operator: span "kind == 1 or kind != 1 or kind < 1 or kind <= 1 or kind > 1 or kind >= 1"
            => "or(SpanKind == 1i, SpanKind != 1i, SpanKind < 1i, SpanKind <= 1i, SpanKind > 1i, SpanKind >= 1i)";
        literal_on_the_left: span r#""a" == name"# => r#""a" == SpanName"#;
        whitespace_and_line_breaks: span "\n  name ==\t\"a\"\r\n  and kind == 1 "
            => r#"and(SpanName == "a", SpanKind == 1i)"#;
        no_whitespace: span r#"name=="a"and(kind==1)"# => r#"and(SpanName == "a", SpanKind == 1i)"#;
        // Arithmetic.
        arithmetic_comparison: span "end_time_unix_nano - start_time_unix_nano > 1000"
            => "(EndTimeUnixNano - StartTimeUnixNano) > 1000i";
        parenthesised_arithmetic: span "(end_time_unix_nano - start_time_unix_nano) > 1000"
            => "(EndTimeUnixNano - StartTimeUnixNano) > 1000i";
        parenthesised_arithmetic_then_more: span "(1 + 2) * 3 == 9" => "((1i + 2i) * 3i) == 9i";
        arithmetic_precedence: span "1 + 2 * 3 == 7" => "(1i + (2i * 3i)) == 7i";
        arithmetic_left_associative: span "10 - 2 - 3 == 5" => "((10i - 2i) - 3i) == 5i";
        division: span "kind / 2.0 == 1" => "(SpanKind / 2.0f) == 1i";
        arithmetic_on_the_right: span "5 < kind + 1" => "5i < (SpanKind + 1i)";
        subtraction_without_spaces_before_a_name: span "kind-kind == 0" => "(SpanKind - SpanKind) == 0i";
        parenthesised_arithmetic_inside_a_group: span "((kind + 1) > 2 and true)"
            => "and((SpanKind + 1i) > 2i, true)";
        // Literals.
        string_literal: span r#"name == "a b""# => r#"SpanName == "a b""#;
        string_escapes: span r#"name == "q\"b\\n\n\t\u00e9\x41""# => r#"SpanName == "q\"b\\n\n\téA""#;
        int_literal: span "kind == 3" => "SpanKind == 3i";
        negative_int_literal: span "kind == -3" => "SpanKind == -3i";
        octal_int_literal: span "kind == 010" => "SpanKind == 8i";
        float_literal: span "kind == 1.25" => "SpanKind == 1.25f";
        negative_float_literal: span "kind == -.5" => "SpanKind == -0.5f";
        float_with_exponent: span "kind == 2.5e2" => "SpanKind == 250.0f";
        bool_literal: span "name == true" => "SpanName == true";
        nil_literal: span "name != nil" => "SpanName != nil";
        bytes_literal: span r#"attributes["b"] == 0x00ff"# => r#"Span["b"] == 0x00ff"#;
        // Enums.
        enum_span_kind_unspecified: span "kind == SPAN_KIND_UNSPECIFIED" => "SpanKind == 0i";
        enum_span_kind_internal: span "kind == SPAN_KIND_INTERNAL" => "SpanKind == 1i";
        enum_span_kind_server: span "kind == SPAN_KIND_SERVER" => "SpanKind == 2i";
        enum_span_kind_client: span "kind == SPAN_KIND_CLIENT" => "SpanKind == 3i";
        enum_span_kind_producer: span "kind == SPAN_KIND_PRODUCER" => "SpanKind == 4i";
        enum_span_kind_consumer: span "kind == SPAN_KIND_CONSUMER" => "SpanKind == 5i";
        enum_status_unset: span "status.code == STATUS_CODE_UNSET" => "StatusCode == 0i";
        enum_status_ok: span "status.code == STATUS_CODE_OK" => "StatusCode == 1i";
        enum_status_error: span "status.code == STATUS_CODE_ERROR" => "StatusCode == 2i";
        enum_in_event_context: spanevent "span.kind == SPAN_KIND_CLIENT" => "SpanKind == 3i";
        // Span context paths.
        path_name: span r#"name == "x""# => r#"SpanName == "x""#;
        path_kind_string: span r#"kind.string == "Server""# => r#"SpanKindString == "Server""#;
        path_kind_deprecated_string: span r#"kind.deprecated_string == "SPAN_KIND_SERVER""#
            => r#"SpanKindDeprecatedString == "SPAN_KIND_SERVER""#;
        path_status_code: span "status.code == 2" => "StatusCode == 2i";
        path_attribute: span r#"attributes["http.method"] == "GET""# => r#"Span["http.method"] == "GET""#;
        path_attribute_with_escapes: span r#"attributes["a\"b"] == 1"# => r#"Span["a\"b"] == 1i"#;
        path_resource_attribute: span r#"resource.attributes["service.name"] == "x""#
            => r#"Resource["service.name"] == "x""#;
        path_scope_name: span r#"instrumentation_scope.name == "x""# => r#"ScopeName == "x""#;
        path_scope_name_new_prefix: span r#"scope.name == "x""# => r#"ScopeName == "x""#;
        path_trace_state: span r#"trace_state == "a=b""# => r#"TraceState == "a=b""#;
        path_trace_state_key: span r#"trace_state["a"] == "b""# => r#"TraceState["a"] == "b""#;
        path_start_time: span "start_time_unix_nano > 0" => "StartTimeUnixNano > 0i";
        path_end_time: span "end_time_unix_nano > 0" => "EndTimeUnixNano > 0i";
        path_trace_id_string: span r#"trace_id.string == "x""# => r#"TraceIdString == "x""#;
        path_span_id_string: span r#"span_id.string == "x""# => r#"SpanIdString == "x""#;
        path_parent_span_id_string: span r#"parent_span_id.string == "x""# => r#"ParentSpanIdString == "x""#;
        path_with_span_prefix: span r#"span.name == "x""# => r#"SpanName == "x""#;
        path_attribute_with_span_prefix: span r#"span.attributes["k"] == 1"# => r#"Span["k"] == 1i"#;
        path_status_with_span_prefix: span "span.status.code == 1" => "StatusCode == 1i";
        path_spaces_around_dots_and_keys: span r#"resource . attributes [ "k" ] == 1"# => r#"Resource["k"] == 1i"#;
        // Span event context paths.
        event_name: spanevent r#"name == "exception""# => r#"EventName == "exception""#;
        event_name_prefixed: spanevent r#"spanevent.name == "exception""# => r#"EventName == "exception""#;
        event_attribute: spanevent r#"attributes["exception.type"] == "x""# => r#"Event["exception.type"] == "x""#;
        event_attribute_prefixed: spanevent r#"spanevent.attributes["k"] == 1"# => r#"Event["k"] == 1i"#;
        event_span_name: spanevent r#"span.name == "x""# => r#"SpanName == "x""#;
        event_span_attribute: spanevent r#"span.attributes["k"] == 1"# => r#"Span["k"] == 1i"#;
        event_span_trace_state: spanevent r#"span.trace_state["k"] == "v""# => r#"TraceState["k"] == "v""#;
        event_resource_attribute: spanevent r#"resource.attributes["k"] == 1"# => r#"Resource["k"] == 1i"#;
        event_scope_name: spanevent r#"instrumentation_scope.name == "x""# => r#"ScopeName == "x""#;
        // Converters.
        converter_is_string: span r#"IsString(attributes["a"])"# => r#"IsString(Span["a"])"#;
        converter_is_int: span r#"IsInt(attributes["a"])"# => r#"IsInt(Span["a"])"#;
        converter_is_double: span r#"IsDouble(attributes["a"])"# => r#"IsDouble(Span["a"])"#;
        converter_is_bool: span r#"IsBool(attributes["a"])"# => r#"IsBool(Span["a"])"#;
        converter_len: span "Len(name) > 3" => "Len(SpanName) > 3i";
        converter_len_of_literal: span r#"Len("abc") == 3"# => r#"Len("abc") == 3i"#;
        converter_named_arguments: span r#"IsMatch(target = name, pattern = "x")"# => "IsMatch(SpanName, /x/)";
        converter_named_arguments_reordered: span r#"IsMatch(pattern = "x", target = name)"#
            => "IsMatch(SpanName, /x/)";
        converter_positional_then_named: span r#"IsMatch(name, pattern = "x")"# => "IsMatch(SpanName, /x/)";
        converter_nested: span r#"IsMatch(Len(name), "1")"# => "IsMatch(Len(SpanName), /1/)";
        converter_pattern_translated: span r#"IsMatch(name, "\\d")"# => "IsMatch(SpanName, /[0-9]/)";
        converter_is_map: span r#"IsMap(attributes["a"])"# => r#"IsMap(Span["a"])"#;
        converter_is_list: span r#"IsList(attributes["a"])"# => r#"IsList(Span["a"])"#;
        converter_to_lower_case: span r#"ToLowerCase(name) == "x""# => r#"ToLowerCase(SpanName) == "x""#;
        converter_to_upper_case: span r#"ToUpperCase(name) == "X""# => r#"ToUpperCase(SpanName) == "X""#;
        converter_has_prefix: span r#"HasPrefix(name, "G")"# => r#"HasPrefix(SpanName, "G")"#;
        converter_has_suffix_named: span r#"HasSuffix(suffix = "s", target = name)"# => r#"HasSuffix(SpanName, "s")"#;
        converter_string: span r#"String(attributes["a"]) == "1""# => r#"String(Span["a"]) == "1""#;
        converter_concat: span r#"Concat([name, 1, attributes["a"]], "-") == "x""#
            => r#"Concat([SpanName, 1i, Span["a"]], "-") == "x""#;
        converter_concat_empty_list: span r#"Concat([], "") == """# => r#"Concat([], "") == """#;
        path_status_message: span r#"status.message == "x""# => r#"StatusMessage == "x""#;
        path_scope_version: span r#"instrumentation_scope.version == "1""# => r#"ScopeVersion == "1""#;
        path_scope_attribute: span r#"scope.attributes["k"][0] == 1"# => r#"Scope["k"] == 1i"#;
        event_scope_version: spanevent r#"instrumentation_scope.version == "1""# => r#"ScopeVersion == "1""#;
        converter_target_arithmetic: span r#"IsMatch(kind + 1, "3")"# => "IsMatch((SpanKind + 1i), /3/)";
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let deep = format!("{}true{}", "(".repeat(10_000), ")".repeat(10_000));
        let e = parse(&deep, ContextKind::Span).unwrap_err();
        assert_eq!(e.message, "nested deeper than 128 levels");
        let ok = format!("{}true{}", "(".repeat(100), ")".repeat(100));
        assert!(parse(&ok, ContextKind::Span).is_ok());
        let math = format!("{}1{} == 1", "(".repeat(10_000), ")".repeat(10_000));
        assert_eq!(
            parse(&math, ContextKind::Span).unwrap_err().message,
            "nested deeper than 128 levels"
        );
    }

    #[test]
    fn error_offsets_are_bytes_internally() {
        let e = parse(r#"name == "é" and nme == 1"#, ContextKind::Span).unwrap_err();
        assert_eq!(e.at, 17);
    }
}
