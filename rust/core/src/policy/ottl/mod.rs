//! OTTL conditions, as the reference's `ottl_condition` policy takes them (`span` and `spanevent` lists, parsed by
//! `pkg/ottl` with the `ottlspan` and `ottlspanevent` contexts), parsed once and evaluated per span or event
//! without allocating.
//!
//! What is supported (anything else is a parse error naming the construct, never a silent `false`):
//!
//! - booleans: `==`, `!=`, `<`, `<=`, `>`, `>=`, `and`, `or`, `not`, parentheses, `true`/`false`, converters
//!   returning a boolean; precedence `not` > `and` > `or`, short-circuit left to right;
//! - values: strings (Go escapes), ints (Go `ParseInt(s, 0, 64)`: a leading `0` is octal), floats, `true`, `false`,
//!   `nil`, byte literals `0x…`, the span enums `SPAN_KIND_*` and `STATUS_CODE_*`, arithmetic `+ - * /` on ints and
//!   floats (int with float gives a float; division by zero is an evaluation error; ints wrap as in Go);
//! - span context paths: `name`, `kind` (+ `.string`, `.deprecated_string`), `status.code`, `status.message`,
//!   `attributes["k"]`, `resource.attributes["k"]`, `instrumentation_scope.name` (or `scope.name`),
//!   `instrumentation_scope.version`, `instrumentation_scope.attributes["k"]` (these three read from the raw
//!   bytes when asked, see `raw`), `trace_state`,
//!   `trace_state["k"]`, `start_time_unix_nano`, `end_time_unix_nano`, `trace_id.string`, `span_id.string`,
//!   `parent_span_id.string`; a `span.` prefix is accepted;
//! - span event context paths: `name` and `attributes["k"]` (the event's, also with a `spanevent.` prefix), every
//!   span path under `span.`, `resource.attributes["k"]`, the `instrumentation_scope` paths;
//! - converters: `IsMatch(target, pattern)` (pattern a string literal in Go RE2 syntax, see `re2`),
//!   `IsString`, `IsInt`, `IsDouble`, `IsBool`, `IsMap`, `IsList`, `Len`, `ToLowerCase`, `ToUpperCase`,
//!   `HasPrefix`, `HasSuffix`, `String`, `Concat([...], delimiter)` (the only place a list literal is taken),
//!   `Int`, `Double`, `Trim`, `TrimPrefix`, `TrimSuffix`; named arguments (`IsMatch(target = name, pattern = "x")`).
//!
//! Semantics follow the reference's code where its documentation differs:
//!
//! - comparisons are `compare.go`: int and float compare as float64; strings and bytes compare bytewise; booleans
//!   are ordered (false < true); `nil` equals `nil` (and `nil <= nil`, `nil >= nil` are true); an empty bytes value
//!   is a nil byte slice and compares as `nil`; any other mix of types is "not equal": `!=` is true, every other
//!   operator false;
//! - an absent attribute and an attribute with an empty value read as `nil`;
//! - `trace_state["k"]` is `""` when the key is absent and `nil` when the trace state does not parse (the
//!   reference's getter returns nil there, not an error);
//! - `IsMatch`, `String` and `Concat` convert as OTTL's `StringLikeGetter`: ints and booleans formatted, floats as
//!   go-json formats them (`1e+21`, `1e-07`), bytes as lowercase hex, maps and lists as go-json's text of their
//!   `AsRaw()` (sorted keys, base64 bytes, HTML escapes); `nil` does not match;
//! - `Len` is the length in bytes of a string (Go's `len`), of bytes, the entries of a map or the elements of a
//!   list, or an error for other values;
//! - maps and lists compare with `==`/`!=` as `pcommon`'s `Equal`; ordering them is false;
//! - the string converters (`ToLowerCase`, `HasPrefix`, …) take strings only (OTTL's `StringGetter`), so a
//!   `nil` or a number fails to evaluate;
//! - indexing into an attribute's value, as OTTL's `getIndexableValue`: `attributes["k"][0]`, `attributes["m"]["x"]`,
//!   nested (`[0]["a"]`), on span, resource and event attributes. A string indexes a map (the first entry of
//!   that key; a missing key is `nil`), an int indexes a list; an out-of-range index, a string into a list, an int
//!   into a map, or any index into a scalar is an evaluation error; an absent attribute is `nil` whatever follows.
//!
//! Everything else (other converters, editors, other paths, map literals) is refused when parsed.

mod eval;
mod lexer;
mod parser;
mod raw;

use std::fmt;

use crate::otlp::decode::{AttrKeys, AttrValue, SpanView};

pub use eval::EvalError;

/// The context a condition is written for: the reference's `ottlspan` or `ottlspanevent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContextKind {
    Span,
    SpanEvent,
}

impl ContextKind {
    pub fn name(self) -> &'static str {
        match self {
            ContextKind::Span => "span",
            ContextKind::SpanEvent => "spanevent",
        }
    }
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    #[cfg(test)]
    pub(crate) fn symbol(self) -> &'static str {
        match self {
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }
}

/// A parsed condition, ready to evaluate once `bind` has resolved its attribute keys.
#[derive(Debug, Clone)]
pub struct Condition {
    expr: String,
    kind: ContextKind,
    root: parser::BoolExpr,
}

/// Why an expression is not a condition tailsample can run.
///
/// `position` is the index, in characters from 0, of the construct at fault in `expr`. Displayed as
/// ``<message> at position <n> in `<expr>` `` followed by the expression and a caret under the position (the
/// caller adds the YAML path).
#[derive(Debug, Clone, PartialEq)]
pub struct OttlError {
    pub position: usize,
    pub message: String,
    /// The expression, as given.
    pub expr: String,
}

impl fmt::Display for OttlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // One line, so the caret lines up: a line break or tab is shown as a space.
        let flat: String = self
            .expr
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        write!(
            f,
            "{} at position {} in `{flat}`\n    {flat}\n    {}^",
            self.message,
            self.position,
            " ".repeat(self.position)
        )
    }
}

impl std::error::Error for OttlError {}

/// Parses `expr` as a boolean condition of context `kind`.
pub fn parse(expr: &str, kind: ContextKind) -> Result<Condition, OttlError> {
    match parser::parse(expr, kind) {
        Ok(root) => Ok(Condition {
            expr: expr.to_string(),
            kind,
            root,
        }),
        Err(e) => Err(OttlError {
            position: expr.get(..e.at).map_or(0, |s| s.chars().count()),
            message: e.message,
            expr: expr.to_string(),
        }),
    }
}

/// What a span condition sees: the span, its extracted attributes and its resource's, and its scope's name.
pub struct SpanCtx<'a> {
    pub span: &'a SpanView<'a>,
    /// The span's extracted attributes, by key index.
    pub attrs: &'a [AttrValue<'a>],
    /// Its resource's, by key index.
    pub resource_attrs: &'a [AttrValue<'a>],
    pub scope_name: &'a str,
    /// The scope's raw `InstrumentationScope` bytes ("" if none), for `instrumentation_scope.version` and
    /// `.attributes`, read only when a condition asks.
    pub scope_raw: &'a [u8],
}

/// What a span event condition sees: the event's name and extracted attributes, and its span's context.
pub struct EventCtx<'a> {
    pub name: &'a str,
    /// The event's extracted attributes, by key index.
    pub attrs: &'a [AttrValue<'a>],
    pub span: &'a SpanCtx<'a>,
}

/// The attribute keys a condition reads, by where it reads them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeysRead {
    pub span: Vec<String>,
    pub event: Vec<String>,
    pub resource: Vec<String>,
}

impl Condition {
    /// The expression as written.
    pub fn expr(&self) -> &str {
        &self.expr
    }

    pub fn kind(&self) -> ContextKind {
        self.kind
    }

    /// Attribute keys read, so the scanner extracts them: (span or event attribute keys, resource attribute keys).
    ///
    /// For a span event condition the first list holds the event's keys and also the span's (`span.attributes`),
    /// since `bind` resolves every key in one key set; `keys_read` tells them apart.
    pub fn attribute_keys(&self) -> (Vec<String>, Vec<String>) {
        let k = self.keys_read();
        let mut first = k.event;
        for key in k.span {
            if !first.contains(&key) {
                first.push(key);
            }
        }
        (first, k.resource)
    }

    /// Attribute keys read, by source, each list in first-use order without duplicates.
    pub fn keys_read(&self) -> KeysRead {
        let mut out = KeysRead::default();
        self.root.visit_attrs(&mut |a| {
            let list = match a.source {
                parser::Source::Span => &mut out.span,
                parser::Source::Event => &mut out.event,
                parser::Source::Resource => &mut out.resource,
                // Read from the scope's raw bytes, not extracted by the scanner.
                parser::Source::Scope => return,
            };
            if !list.contains(&a.key) {
                list.push(a.key.clone());
            }
        });
        out
    }

    /// Resolves keys to indexes in the scanner's key set, which holds every key from `attribute_keys()`. The same
    /// set indexes span, resource and event attributes (`SpanCtx::attrs`, `resource_attrs`, `EventCtx::attrs`).
    pub fn bind(&mut self, keys: &AttrKeys) {
        self.root.visit_attrs_mut(&mut |a| {
            if a.source == parser::Source::Scope {
                return;
            }
            a.index = keys
                .index_of_str(&a.key)
                .expect("attribute key registered before bind");
        });
    }

    /// Evaluates a span condition on one span.
    pub fn eval_span(&self, ctx: &SpanCtx<'_>) -> Result<bool, EvalError> {
        if self.kind != ContextKind::Span {
            return Err(EvalError::new(
                "a spanevent condition is evaluated on span events, not spans",
            ));
        }
        eval::condition(
            &self.root,
            &eval::Env {
                span: ctx,
                event_name: "",
                event_attrs: &[],
            },
        )
    }

    /// Evaluates a span event condition on one event.
    pub fn eval_event(&self, ctx: &EventCtx<'_>) -> Result<bool, EvalError> {
        if self.kind != ContextKind::SpanEvent {
            return Err(EvalError::new(
                "a span condition is evaluated on spans, not span events",
            ));
        }
        eval::condition(
            &self.root,
            &eval::Env {
                span: ctx.span,
                event_name: ctx.name,
                event_attrs: ctx.attrs,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(expr: &str, kind: ContextKind) -> OttlError {
        match parse(expr, kind) {
            Ok(c) => panic!("{expr} parsed: {c:?}"),
            Err(e) => e,
        }
    }

    /// Scenario: an expression that is not a supported condition.
    /// Guarantees: the error names the construct and points at it (character position and caret).
    macro_rules! error_cases {
        ($($name:ident: $kind:ident $expr:expr => $pos:expr, $msg:expr;)*) => {$(
            #[test]
            fn $name() {
                let e = error($expr, ContextKind::$kind);
                assert_eq!((e.position, e.message.as_str()), ($pos, $msg), "{}", $expr);
            }
        )*};
    }

    error_cases! {
        empty: Span "" => 0, "empty condition";
        blank: Span "  " => 0, "empty condition";
        unknown_path: Span r#"nme == "x""#
            => 0, "unknown path `nme` in the span context; tailsample supports: name, kind, kind.string, \
                   kind.deprecated_string, status.code, status.message, attributes[\"…\"], \
                   resource.attributes[\"…\"], instrumentation_scope.name, instrumentation_scope.version, \
                   instrumentation_scope.attributes[\"…\"], trace_state, trace_state[\"…\"], start_time_unix_nano, \
                   end_time_unix_nano, trace_id.string, span_id.string, parent_span_id.string";
        unknown_path_after_and: Span r#"name == "a" and foo.bar == 1"#
            => 16, "unknown path `foo.bar` in the span context; tailsample supports: name, kind, kind.string, \
                    kind.deprecated_string, status.code, status.message, attributes[\"…\"], \
                    resource.attributes[\"…\"], instrumentation_scope.name, instrumentation_scope.version, \
                    instrumentation_scope.attributes[\"…\"], trace_state, trace_state[\"…\"], start_time_unix_nano, \
                    end_time_unix_nano, trace_id.string, span_id.string, parent_span_id.string";
        unknown_field: Span "status.cod == 1" => 7, "`status` has no field `cod`";
        unknown_resource_path: Span r#"resource.name == "x""#
            => 9, "unknown path `resource.name` in the resource context; tailsample supports: \
                   resource.attributes[\"…\"]";
        unsupported_path: Span r#"scope.schema_url == "x""#
            => 6, "`scope.schema_url` is an OTTL path tailsample's conditions do not read";
        unsupported_time_path: Span "start_time > 0"
            => 0, "`start_time` is an OTTL path tailsample's conditions do not read; use `start_time_unix_nano`";
        unsupported_raw_id: Span "trace_id == nil"
            => 0, "`trace_id` is an OTTL path tailsample's conditions do not read; compare its hex form \
                   `trace_id.string`";
        whole_attribute_map: Span "attributes == nil"
            => 0, "`attributes` without a key (the whole map) is not supported; read one attribute with \
                   `attributes[\"key\"]`";
        int_attribute_key_then_more: Span r#"attributes[0]["b"] == 1"#
            => 10, "attributes are indexed by a string key, not an int (`[0]`), e.g. `attributes[\"http.method\"]`";
        int_attribute_key: Span "attributes[0] == 1"
            => 10, "attributes are indexed by a string key, not an int (`[0]`), e.g. `attributes[\"http.method\"]`";
        dynamic_key: Span "attributes[name] == 1"
            => 11, "expected a string or int key in `[…]`, found `name` (keys computed from other values are not \
                    supported)";
        unclosed_key: Span r#"attributes["a" == 1"#
            => 15, "expected `]` to close the `[` at position 10, found `==`";
        indexing_a_plain_field: Span r#"name["x"] == 1"# => 4, "`name` cannot be indexed";
        trace_state_two_keys: Span r#"trace_state["a"]["b"] == "x""#
            => 11, "trace_state takes exactly one string key";
        event_path_in_span_context: Span r#"spanevent.name == "x""#
            => 0, "`spanevent.name`: the span context has no span event paths; conditions on events belong in \
                   the policy's `spanevent` list";
        span_field_in_event_context: SpanEvent "kind == 1"
            => 0, "unknown path `kind` in the spanevent context; the span's field is `span.kind`";
        unknown_event_path: SpanEvent "foo == 1"
            => 0, "unknown path `foo` in the spanevent context; tailsample supports: name, attributes[\"…\"], \
                   span.<any span path>, resource.attributes[\"…\"], instrumentation_scope.name, \
                   instrumentation_scope.version, instrumentation_scope.attributes[\"…\"]";
        unknown_function: Span r#"Foo(name) == "x""#
            => 0, "unknown converter `Foo`; tailsample's conditions support IsMatch, IsString, IsInt, IsDouble, \
                   IsBool, IsMap, IsList, Len, ToLowerCase, ToUpperCase, HasPrefix, HasSuffix, String, Concat, Int, Double, Trim, TrimPrefix, TrimSuffix";
        unknown_function_as_condition: Span r#"name == "a" and IsPresent(attributes["x"])"#
            => 16, "unknown converter `IsPresent`; tailsample's conditions support IsMatch, IsString, IsInt, \
                    IsDouble, IsBool, IsMap, IsList, Len, ToLowerCase, ToUpperCase, HasPrefix, HasSuffix, String, Concat, Int, Double, Trim, TrimPrefix, TrimSuffix";
        lowercase_converter: Span r#"isMatch(name, "x")"#
            => 0, "converter names start with an uppercase letter: did you mean `IsMatch`?";
        editor_statement: Span r#"set(name, "x")"#
            => 0, "`set(…)` is an editor call (a statement that changes telemetry); a condition can only call \
                   converters (IsMatch, IsString, IsInt, IsDouble, IsBool, IsMap, IsList, Len, ToLowerCase, ToUpperCase, HasPrefix, HasSuffix, String, Concat, Int, Double, Trim, TrimPrefix, TrimSuffix)";
        statement_with_where: Span r#"drop() where name == "x""#
            => 0, "`drop(…)` is an editor call (a statement that changes telemetry); a condition can only call \
                   converters (IsMatch, IsString, IsInt, IsDouble, IsBool, IsMap, IsList, Len, ToLowerCase, ToUpperCase, HasPrefix, HasSuffix, String, Concat, Int, Double, Trim, TrimPrefix, TrimSuffix)";
        leading_where: Span r#"where name == "x""#
            => 0, "`where` introduces the condition of a statement; an ottl_condition is the condition alone";
        trailing_where: Span r#"name == "x" where kind == 1"#
            => 12, "unexpected `where`: an ottl_condition is a condition only, not a statement";
        too_few_arguments: Span r#"IsMatch(name)"#
            => 0, "IsMatch takes 2 arguments (target, pattern), got 1";
        concat_without_a_list: Span r#"Concat(name, "-") == "x""#
            => 7, "the values of Concat are a list literal, e.g. `Concat([name, attributes[\"k\"]], \"-\")`";
        list_argument_elsewhere: Span r#"HasPrefix(name, ["a"])"#
            => 16, "`prefix` of HasPrefix is not a list";
        list_in_a_comparison: Span r#"attributes["k"] == ["a"]"#
            => 19, "list values (`[…]`) are not supported in conditions";
        unclosed_list: Span r#"Concat([name "x") == "a""#
            => 13, "expected `,` or `]` in the list opened at position 7, found `\"x\"`";
        string_converter_as_condition: Span "ToLowerCase(name)"
            => 0, "`ToLowerCase(name)` returns a string, not a boolean: compare it, e.g. `ToLowerCase(name) == \"x\"`";
        substring_is_refused: Span r#"Substring(name, 0, 3) == "GET""#
            => 0, "unknown converter `Substring`; tailsample's conditions support IsMatch, IsString, IsInt, IsDouble, \
                   IsBool, IsMap, IsList, Len, ToLowerCase, ToUpperCase, HasPrefix, HasSuffix, String, Concat, Int, Double, Trim, TrimPrefix, TrimSuffix";
        scope_dropped_count: Span "instrumentation_scope.dropped_attributes_count == 0"
            => 22, "`instrumentation_scope.dropped_attributes_count` is an OTTL path tailsample's conditions do not read";
        trim_replacement_not_literal: Span "Trim(name, name) == \"x\""
            => 11, "the replacement of Trim must be a string literal";
        trim_too_many: Span "Trim(name, \" \", \"x\") == \"x\""
            => 0, "Trim takes 1 or 2 arguments (target, replacement), got 3";
        too_many_arguments: Span r#"IsString(name, "x")"#
            => 0, "IsString takes 1 argument (target), got 2";
        unknown_named_argument: Span r#"IsMatch(target = name, regex = "x")"#
            => 23, "IsMatch has no parameter `regex`; its parameters: target, pattern";
        duplicate_named_argument: Span r#"IsMatch(target = name, target = "x")"#
            => 23, "parameter `target` is given twice";
        unnamed_after_named: Span r#"IsMatch(target = name, "x")"#
            => 23, "an unnamed argument cannot follow a named one";
        non_literal_pattern: Span r#"IsMatch(name, attributes["p"])"#
            => 14, "the pattern of IsMatch must be a string literal (it is compiled once, when the condition is \
                    parsed)";
        invalid_pattern: Span r#"IsMatch(name, "(unclosed")"#
            => 14, "invalid regular expression \"(unclosed\" in IsMatch: unclosed group";
        backreference_pattern: Span r#"IsMatch(name, "(a)\\1")"#
            => 14, "invalid regular expression \"(a)\\\\1\" in IsMatch: invalid escape sequence: `\\1` \
                    (backreferences are not supported)";
        len_is_not_a_condition: Span "Len(name)"
            => 0, "`Len(name)` returns an int, not a boolean: compare it, e.g. `Len(name) > 0`";
        len_of_an_int: Span "Len(kind) > 1" => 4, "Len takes a string, bytes, a map or a list; its argument is an int";
        indexed_converter: Span r#"IsMatch(name, "x")["a"]"#
            => 18, "indexing the result of a converter (`IsMatch(…)[…]`) is not supported";
        missing_close_paren: Span r#"(name == "a" or kind == 1"#
            => 25, "expected `)` to close the `(` at position 0, found the end of the condition";
        missing_close_paren_of_call: Span r#"IsMatch(name, "x""#
            => 17, "expected `,` or `)` in the arguments of `IsMatch`, found the end of the condition";
        extra_close_paren: Span r#"name == "a")"# => 11, "unexpected `)`: there is no `(` to close";
        trailing_garbage: Span r#"name == "a" kind == 1"#
            => 12, "unexpected `kind` after a complete condition (join conditions with `and` or `or`)";
        dangling_and: Span r#"name == "a" and"#
            => 15, "expected a condition (a comparison, true or false, a converter call or a parenthesised \
                    condition), found the end of the condition";
        missing_right_operand: Span "kind == "
            => 8, "expected a value after `==`, found the end of the condition";
        bare_path: Span "name"
            => 4, "`name` is not a condition: compare it (==, !=, <, <=, >, >=) or use a converter that returns a \
                   boolean";
        bare_path_with_and: Span "name and true"
            => 5, "`name` is not a condition: compare it (==, !=, <, <=, >, >=) or use a converter that returns a \
                   boolean";
        single_equals: Span r#"name = "x""# => 5, "`=` is not a comparison; compare with `==`";
        signed_number_after_path: Span "end_time_unix_nano -1 > 0"
            => 19, "expected a comparison operator after `end_time_unix_nano`, found `-1`: OTTL reads `-1` as a \
                    signed number; to add or subtract, put a space after the sign (`- 1`)";
        double_not: Span "not not true" => 4, "`not` cannot follow `not`; write `not (not …)`";
        not_without_operand: Span "not" => 3, "expected a condition after `not` (a comparison, true or false, a \
            converter call or a parenthesised condition), found the end of the condition";
        unknown_enum: Span "kind == SPAN_KIND_SERVERR"
            => 8, "unknown enum `SPAN_KIND_SERVERR`; known: SPAN_KIND_UNSPECIFIED, SPAN_KIND_INTERNAL, \
                   SPAN_KIND_SERVER, SPAN_KIND_CLIENT, SPAN_KIND_PRODUCER, SPAN_KIND_CONSUMER, STATUS_CODE_UNSET, \
                   STATUS_CODE_OK, STATUS_CODE_ERROR";
        capitalised_name_without_call: Span "Name == 1"
            => 0, "unknown name `Name`: converters are called with parentheses, enums are all capitals";
        list_literal: Span r#"name == ["a"]"# => 8, "list values (`[…]`) are not supported in conditions";
        map_literal: Span r#"name == {"a": 1}"# => 8, "map values (`{…}`) are not supported in conditions";
        string_arithmetic: Span r#"name == "a" + "b""#
            => 12, "`+` needs numbers, paths or converters on both sides; `\"a\"` is a string (OTTL has no string \
                    concatenation in conditions)";
        arithmetic_on_a_string_path: Span "name + 1 > 0"
            => 0, "arithmetic needs numbers, but `name + 1` has a string operand";
        arithmetic_with_enum: Span "1 + SPAN_KIND_SERVER == 3" => 4, "enum `SPAN_KIND_SERVER` cannot be used in arithmetic";
        unary_minus: Span "-kind == -1"
            => 0, "expected a value, found `-`: there is no unary sign; a negative number is written `-1`";
        lexer_error_position_in_characters: Span r#"attributes["é"] == 'x'"#
            => 19, "unexpected `'`; OTTL strings are in double quotes";
        invalid_escape: Span r#"name == "a\qb""# => 10, "invalid escape `\\q` in string";
        octal_with_nine: Span "kind == 09"
            => 8, "invalid integer `09`: a leading 0 makes OTTL read it as octal, which has no digits 8 or 9";
        uppercase_in_path: Span "Kind == 1" => 0, "unknown name `Kind`: converters are called with parentheses, enums are all capitals";
        mixed_case_path: Span "kIND == 1" => 0, "path segments are lowercase (`kIND`)";
        uppercase_boolean: Span "name == TRUE" => 8, "`TRUE` is not OTTL: keywords and booleans are lowercase (`true`)";
        uppercase_keyword: Span r#"name == "a" AND kind == 1"#
            => 12, "unexpected `AND` after a complete condition (join conditions with `and` or `or`)";
    }

    /// Scenario: arbitrary text, built from OTTL's tokens and stray characters.
    /// Guarantees: parsing returns a condition or an error, never panics, and the error points inside the text.
    #[test]
    fn garbage_never_panics() {
        const PIECES: &[&str] = &[
            "name",
            "attributes",
            "[",
            "]",
            "\"k\"",
            "\"",
            "(",
            ")",
            "==",
            "!=",
            "<",
            ">=",
            "and",
            "or",
            "not",
            "true",
            "nil",
            "1",
            "-1",
            ".5",
            "0x0a",
            "0x",
            "IsMatch",
            "Len",
            ",",
            ".",
            "span",
            "resource",
            "SPAN_KIND_SERVER",
            "+",
            "*",
            "/",
            "=",
            "é",
            "\\",
            " ",
            "\n",
            "where",
            "set",
            "trace_state",
            "{",
            "09",
            "1e",
            "\"\\x\"",
        ];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            let mut expr = String::new();
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = 1 + (seed % 12) as usize;
            for k in 0..len {
                let r = seed.rotate_left(5 * k as u32);
                expr.push_str(PIECES[(r % PIECES.len() as u64) as usize]);
                if r & 16 != 0 {
                    expr.push(' ');
                }
            }
            for kind in [ContextKind::Span, ContextKind::SpanEvent] {
                if let Err(e) = parse(&expr, kind) {
                    assert!(e.position <= expr.chars().count(), "{expr}: {e:?}");
                    let _ = e.to_string();
                }
            }
        }
    }

    #[test]
    fn display_quotes_the_expression_with_a_caret() {
        let e = error(r#"name == "a" and nme == "b""#, ContextKind::Span);
        assert_eq!(
            e.to_string().lines().skip(1).collect::<Vec<_>>(),
            vec![r#"    name == "a" and nme == "b""#, "                    ^"]
        );
        assert!(e
            .to_string()
            .starts_with(r#"unknown path `nme` in the span context; "#));
        assert!(e
            .to_string()
            .lines()
            .next()
            .unwrap()
            .ends_with(r#" at position 16 in `name == "a" and nme == "b"`"#));
    }

    #[test]
    fn display_flattens_line_breaks_so_the_caret_lines_up() {
        let e = error("name == \"a\" and\n\tnme == 1", ContextKind::Span);
        assert_eq!(e.position, 17);
        let shown = e.to_string();
        let lines: Vec<&str> = shown.lines().collect();
        assert_eq!(lines.len(), 3, "{shown}");
        assert_eq!(lines[1], "    name == \"a\" and  nme == 1");
        assert_eq!(lines[2], format!("    {}^", " ".repeat(17)));
    }

    #[test]
    fn display_counts_characters_not_bytes() {
        let e = error(r#"name == "é" and nme == 1"#, ContextKind::Span);
        assert_eq!(e.position, 16);
        assert!(e
            .to_string()
            .ends_with(&format!("\n    {}^", " ".repeat(16))));
    }

    #[test]
    fn condition_is_clone_send_sync() {
        fn check<T: Clone + Send + Sync + 'static>() {}
        check::<Condition>();
        check::<OttlError>();
        check::<EvalError>();
    }

    #[test]
    fn keys_are_listed_by_source_without_duplicates() {
        let c = parse(
            r#"attributes["a"] == 1 or resource.attributes["r"] == 2 or attributes["a"] != nil or
               span.attributes["b"] == 3 or IsMatch(resource.attributes["r2"], "x")"#,
            ContextKind::Span,
        )
        .unwrap();
        assert_eq!(
            c.attribute_keys(),
            (
                vec!["a".to_string(), "b".to_string()],
                vec!["r".to_string(), "r2".to_string()]
            )
        );
    }

    #[test]
    fn event_condition_lists_event_then_span_keys() {
        let c = parse(
            r#"span.attributes["s"] == 1 and attributes["e"] == 2 and resource.attributes["r"] == 3 and
               spanevent.attributes["e2"] == 4"#,
            ContextKind::SpanEvent,
        )
        .unwrap();
        assert_eq!(
            c.keys_read(),
            KeysRead {
                span: vec!["s".into()],
                event: vec!["e".into(), "e2".into()],
                resource: vec!["r".into()],
            }
        );
        assert_eq!(
            c.attribute_keys(),
            (
                vec!["e".to_string(), "e2".to_string(), "s".to_string()],
                vec!["r".to_string()]
            )
        );
    }

    #[test]
    fn expr_and_kind_are_kept() {
        let c = parse("true", ContextKind::SpanEvent).unwrap();
        assert_eq!((c.expr(), c.kind()), ("true", ContextKind::SpanEvent));
        assert_eq!(ContextKind::SpanEvent.name(), "spanevent");
    }
}
