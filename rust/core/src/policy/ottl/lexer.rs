//! Tokens of an OTTL condition, cut as the reference's lexer cuts them (`pkg/ottl/grammar.go`, `buildLexer`: a
//! participle lexer whose rules are tried in order, first match wins):
//!
//! - numbers before operators, so `-1` and `+.5` are single (signed) number tokens and `x -1` is a path followed by
//!   a number, not a subtraction (the reference rejects it too; the parser says how to write it);
//! - `0x…` is a byte-slice literal (hex, even length); `1.` and `1e5` are not floats (`1` then `.` or `e5`);
//! - integers are read by Go's `strconv.ParseInt(s, 0, 64)` as participle does, so a leading `0` means octal
//!   (`010` is 8, `09` is an error);
//! - strings are double-quoted and unescaped with Go's `strconv.UnquoteChar` rules (what participle's `Unquote`
//!   applies): `\a \b \f \n \r \t \v \\ \"`, `\xHH`, `\ooo`, `\uHHHH`, `\UHHHHHHHH`; a `\x`/octal byte becomes the
//!   code point U+00HH, as participle builds the string rune by rune;
//! - `and`, `or`, `not`, `true`, `false`, `nil` are keywords only as whole words (`nothing`, `true_x` are names);
//! - whitespace is Go's `\s`: space, `\t`, `\n`, `\f`, `\r`.
//!
//! Names are cut as whole words (`[A-Za-z][A-Za-z0-9_]*`); the parser tells paths (lowercase), converters
//! (capitalised, called) and enums (all capitals) apart.

use super::CmpOp;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    Str(String),
    Int(i64),
    Float(f64),
    Bytes(Vec<u8>),
    /// A name; its text is the token's `text`.
    Word,
    And,
    Or,
    Not,
    True,
    False,
    Nil,
    LParen,
    RParen,
    LBracket,
    RBracket,
    LBrace,
    RBrace,
    Comma,
    Dot,
    Colon,
    /// `=`, which only names function arguments (`IsMatch(target = name, pattern = "x")`).
    Assign,
    Cmp(CmpOp),
    Plus,
    Minus,
    Star,
    Slash,
    Eof,
}

/// A token and where it is: `start..end` are byte offsets in the expression.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Token<'s> {
    pub tok: Tok,
    pub start: usize,
    pub end: usize,
    pub text: &'s str,
}

impl Token<'_> {
    /// How a token is named in error messages.
    pub fn describe(&self) -> String {
        match self.tok {
            Tok::Eof => "the end of the condition".to_string(),
            _ => format!("`{}`", self.text),
        }
    }
}

/// A lexing error at a byte offset.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LexError {
    pub at: usize,
    pub message: String,
}

fn err<T>(at: usize, message: impl Into<String>) -> Result<T, LexError> {
    Err(LexError {
        at,
        message: message.into(),
    })
}

/// Go's `\s`, which the reference's lexer elides.
fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\x0c' | b'\r')
}

pub(crate) fn tokenize(src: &str) -> Result<Vec<Token<'_>>, LexError> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if is_space(c) {
            i += 1;
            continue;
        }
        let start = i;
        let tok = if let Some((tok, end)) = number(src, i)? {
            i = end;
            tok
        } else if c == b'"' {
            let (s, end) = string(src, i)?;
            i = end;
            Tok::Str(s)
        } else if c.is_ascii_alphabetic() {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            match &src[start..i] {
                "and" => Tok::And,
                "or" => Tok::Or,
                "not" => Tok::Not,
                "true" => Tok::True,
                "false" => Tok::False,
                "nil" => Tok::Nil,
                _ => Tok::Word,
            }
        } else {
            let two = b.get(i + 1).copied();
            let (tok, len) = match (c, two) {
                (b'=', Some(b'=')) => (Tok::Cmp(CmpOp::Eq), 2),
                (b'!', Some(b'=')) => (Tok::Cmp(CmpOp::Ne), 2),
                (b'<', Some(b'=')) => (Tok::Cmp(CmpOp::Le), 2),
                (b'>', Some(b'=')) => (Tok::Cmp(CmpOp::Ge), 2),
                (b'<', _) => (Tok::Cmp(CmpOp::Lt), 1),
                (b'>', _) => (Tok::Cmp(CmpOp::Gt), 1),
                (b'=', _) => (Tok::Assign, 1),
                (b'(', _) => (Tok::LParen, 1),
                (b')', _) => (Tok::RParen, 1),
                (b'[', _) => (Tok::LBracket, 1),
                (b']', _) => (Tok::RBracket, 1),
                (b'{', _) => (Tok::LBrace, 1),
                (b'}', _) => (Tok::RBrace, 1),
                (b',', _) => (Tok::Comma, 1),
                (b'.', _) => (Tok::Dot, 1),
                (b':', _) => (Tok::Colon, 1),
                (b'+', _) => (Tok::Plus, 1),
                (b'-', _) => (Tok::Minus, 1),
                (b'*', _) => (Tok::Star, 1),
                (b'/', _) => (Tok::Slash, 1),
                (b'&', Some(b'&')) => return err(i, "unexpected `&&`; OTTL writes `and`"),
                (b'|', Some(b'|')) => return err(i, "unexpected `||`; OTTL writes `or`"),
                (b'!', _) => return err(i, "unexpected `!`; OTTL negates with `not`"),
                (b'\'', _) => return err(i, "unexpected `'`; OTTL strings are in double quotes"),
                _ => {
                    let ch = src[i..].chars().next().unwrap_or('?');
                    return err(i, format!("unexpected character {ch:?}"));
                }
            };
            i += len;
            tok
        };
        out.push(Token {
            tok,
            start,
            end: i,
            text: &src[start..i],
        });
    }
    out.push(Token {
        tok: Tok::Eof,
        start: b.len(),
        end: b.len(),
        text: "",
    });
    Ok(out)
}

fn digits(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    i
}

/// A number token at `i`, if one starts there: Bytes `0x[0-9a-fA-F]+`, then Float
/// `[-+]?\d*\.\d+([eE][-+]?\d+)?`, then Int `[-+]?\d+`, in the reference's order.
fn number(src: &str, i: usize) -> Result<Option<(Tok, usize)>, LexError> {
    let b = src.as_bytes();
    if b[i] == b'0' && b.get(i + 1) == Some(&b'x') {
        let end = {
            let mut j = i + 2;
            while j < b.len() && b[j].is_ascii_hexdigit() {
                j += 1;
            }
            j
        };
        if end > i + 2 {
            let hex = &src[i + 2..end];
            if hex.len() % 2 != 0 {
                return err(
                    i,
                    format!(
                        "invalid byte literal `{}`: odd number of hex digits",
                        &src[i..end]
                    ),
                );
            }
            let bytes = (0..hex.len())
                .step_by(2)
                .map(|k| u8::from_str_radix(&hex[k..k + 2], 16).unwrap_or(0))
                .collect();
            return Ok(Some((Tok::Bytes(bytes), end)));
        }
    }
    let mut j = i;
    if matches!(b[j], b'-' | b'+') {
        j += 1;
    }
    // Float: \d*\.\d+ with an optional exponent.
    let int_end = digits(b, j);
    if b.get(int_end) == Some(&b'.') && b.get(int_end + 1).is_some_and(u8::is_ascii_digit) {
        let mut end = digits(b, int_end + 1);
        if matches!(b.get(end), Some(b'e' | b'E')) {
            let mut k = end + 1;
            if matches!(b.get(k), Some(b'-' | b'+')) {
                k += 1;
            }
            let exp_end = digits(b, k);
            if exp_end > k {
                end = exp_end;
            }
        }
        let text = &src[i..end];
        let v: f64 = text.parse().map_err(|_| LexError {
            at: i,
            message: format!("invalid float `{text}`"),
        })?;
        if v.is_infinite() {
            return err(i, format!("float `{text}` is out of range"));
        }
        return Ok(Some((Tok::Float(v), end)));
    }
    if int_end > j {
        let text = &src[i..int_end];
        return Ok(Some((Tok::Int(parse_int(text, i)?), int_end)));
    }
    Ok(None)
}

/// Go's `strconv.ParseInt(text, 0, 64)` for a `[-+]?\d+` token: a leading `0` makes the rest octal.
fn parse_int(text: &str, at: usize) -> Result<i64, LexError> {
    let (neg, digits) = match text.as_bytes()[0] {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let (radix, body) = if digits.len() > 1 && digits.starts_with('0') {
        (8, &digits[1..])
    } else {
        (10, digits)
    };
    let magnitude = u64::from_str_radix(body, radix).map_err(|e| {
        let why = if radix == 8 && body.bytes().any(|c| c > b'7') {
            "a leading 0 makes OTTL read it as octal, which has no digits 8 or 9".to_string()
        } else {
            e.to_string()
        };
        LexError {
            at,
            message: format!("invalid integer `{text}`: {why}"),
        }
    })?;
    let v = if neg {
        0i64.checked_sub_unsigned(magnitude)
    } else {
        i64::try_from(magnitude).ok()
    };
    v.ok_or_else(|| LexError {
        at,
        message: format!("integer `{text}` is out of range for a 64-bit integer"),
    })
}

/// A double-quoted string at `i`: its unescaped value and the offset after the closing quote.
fn string(src: &str, start: usize) -> Result<(String, usize), LexError> {
    let b = src.as_bytes();
    // The token as the reference's lexer takes it: `"(\\.|[^\\"])*"`, where `.` excludes a newline.
    let mut i = start + 1;
    loop {
        match b.get(i) {
            None => return err(start, "unterminated string"),
            Some(b'"') => break,
            Some(b'\\') => match src[i + 1..].chars().next() {
                None => return err(start, "unterminated string"),
                Some('\n') => return err(i, "invalid escape: a backslash before a line break"),
                Some(c) => i += 1 + c.len_utf8(),
            },
            Some(_) => i += 1,
        }
    }
    let end = i + 1;
    Ok((unquote(src, start + 1, i)?, end))
}

/// Go's `strconv.UnquoteChar` over `src[from..to]` (quote `"`), rune by rune as participle does.
fn unquote(src: &str, from: usize, to: usize) -> Result<String, LexError> {
    let body = &src[from..to];
    let mut out = String::with_capacity(body.len());
    let mut chars = body.char_indices().peekable();
    while let Some((k, c)) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let at = from + k;
        let bad = |what: &str| LexError {
            at,
            message: format!("invalid escape {what} in string"),
        };
        let Some((_, e)) = chars.next() else {
            return Err(bad("`\\`"));
        };
        let value = match e {
            'a' => '\x07',
            'b' => '\x08',
            'f' => '\x0c',
            'n' => '\n',
            'r' => '\r',
            't' => '\t',
            'v' => '\x0b',
            '\\' => '\\',
            '"' => '"',
            'x' | 'u' | 'U' => {
                let n = match e {
                    'x' => 2,
                    'u' => 4,
                    _ => 8,
                };
                let mut v: u32 = 0;
                for _ in 0..n {
                    match chars.next().and_then(|(_, h)| h.to_digit(16)) {
                        Some(d) => v = v << 4 | d,
                        None => return Err(bad(&format!("`\\{e}` (expected {n} hex digits)"))),
                    }
                }
                // `\x` gives a byte value, which participle turns into the rune U+00HH.
                char::from_u32(v).ok_or_else(|| bad(&format!("`\\{e}{v:X}` (not a code point)")))?
            }
            '0'..='7' => {
                let mut v = e as u32 - '0' as u32;
                for _ in 0..2 {
                    match chars.next().and_then(|(_, o)| o.to_digit(8)) {
                        Some(d) => v = v << 3 | d,
                        None => return Err(bad("(an octal escape takes exactly 3 digits)")),
                    }
                }
                if v > 255 {
                    return Err(bad("(an octal escape is at most \\377)"));
                }
                char::from_u32(v).unwrap_or('\u{fffd}')
            }
            other => return Err(bad(&format!("`\\{other}`"))),
        };
        out.push(value);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(src: &str) -> Vec<Tok> {
        tokenize(src)
            .unwrap()
            .into_iter()
            .map(|t| t.tok)
            .filter(|t| *t != Tok::Eof)
            .collect()
    }

    fn lex_err(src: &str) -> LexError {
        tokenize(src).unwrap_err()
    }

    macro_rules! lex_cases {
        ($($name:ident: $src:expr => $want:expr;)*) => {$(
            #[test]
            fn $name() {
                assert_eq!(toks($src), $want);
            }
        )*};
    }

    lex_cases! {
        int: "42" => vec![Tok::Int(42)];
        negative_int_is_one_token: "-42" => vec![Tok::Int(-42)];
        plus_signed_int: "+7" => vec![Tok::Int(7)];
        leading_zero_is_octal: "010" => vec![Tok::Int(8)];
        negative_octal: "-010" => vec![Tok::Int(-8)];
        zero: "0" => vec![Tok::Int(0)];
        double_zero: "00" => vec![Tok::Int(0)];
        int_min: "-9223372036854775808" => vec![Tok::Int(i64::MIN)];
        int_max: "9223372036854775807" => vec![Tok::Int(i64::MAX)];
        float: "1.5" => vec![Tok::Float(1.5)];
        float_without_integer_part: ".5" => vec![Tok::Float(0.5)];
        negative_float: "-.5" => vec![Tok::Float(-0.5)];
        float_with_exponent: "1.5e3" => vec![Tok::Float(1500.0)];
        float_with_signed_exponent: "2.5E-1" => vec![Tok::Float(0.25)];
        dot_without_fraction_is_not_a_float: "1." => vec![Tok::Int(1), Tok::Dot];
        exponent_without_dot_is_not_a_float: "1e5" => vec![Tok::Int(1), Tok::Word];
        float_exponent_needs_digits: "1.5e" => vec![Tok::Float(1.5), Tok::Word];
        bytes: "0xDEADbeef" => vec![Tok::Bytes(vec![0xde, 0xad, 0xbe, 0xef])];
        zero_x_without_hex_is_int_then_word: "0xg" => vec![Tok::Int(0), Tok::Word];
        minus_before_digit_binds_to_the_number: "x -1" => vec![Tok::Word, Tok::Int(-1)];
        minus_with_space_is_an_operator: "x - 1" => vec![Tok::Word, Tok::Minus, Tok::Int(1)];
        minus_before_name_is_an_operator: "x-y" => vec![Tok::Word, Tok::Minus, Tok::Word];
        comparison_operators: "== != < <= > >=" => vec![
            Tok::Cmp(CmpOp::Eq), Tok::Cmp(CmpOp::Ne), Tok::Cmp(CmpOp::Lt),
            Tok::Cmp(CmpOp::Le), Tok::Cmp(CmpOp::Gt), Tok::Cmp(CmpOp::Ge),
        ];
        assign: "=" => vec![Tok::Assign];
        keywords: "and or not true false nil" => vec![
            Tok::And, Tok::Or, Tok::Not, Tok::True, Tok::False, Tok::Nil,
        ];
        keywords_only_as_whole_words: "nothing true_x orange nil2" => vec![
            Tok::Word, Tok::Word, Tok::Word, Tok::Word,
        ];
        not_before_paren: "not(" => vec![Tok::Not, Tok::LParen];
        punctuation: "()[]{},.:" => vec![
            Tok::LParen, Tok::RParen, Tok::LBracket, Tok::RBracket, Tok::LBrace, Tok::RBrace,
            Tok::Comma, Tok::Dot, Tok::Colon,
        ];
        arithmetic: "a + b * c / d" => vec![
            Tok::Word, Tok::Plus, Tok::Word, Tok::Star, Tok::Word, Tok::Slash, Tok::Word,
        ];
        go_whitespace_is_skipped: " \t\n\x0c\r1" => vec![Tok::Int(1)];
        string: r#""abc""# => vec![Tok::Str("abc".into())];
        empty_string: r#""""# => vec![Tok::Str(String::new())];
        escaped_quote_and_backslash: r#""a\"b\\c""# => vec![Tok::Str("a\"b\\c".into())];
        control_escapes: r#""\a\b\f\n\r\t\v""# => vec![Tok::Str("\x07\x08\x0c\n\r\t\x0b".into())];
        hex_escape_is_a_code_point: r#""\x41\xff""# => vec![Tok::Str("A\u{ff}".into())];
        octal_escape: r#""\101\377""# => vec![Tok::Str("A\u{ff}".into())];
        unicode_escapes: r#""\u00e9\U0001F600""# => vec![Tok::Str("é😀".into())];
        raw_unicode_and_newline_kept: "\"é\nx\"" => vec![Tok::Str("é\nx".into())];
        string_in_path_key: r#"attributes["k"]"# => vec![
            Tok::Word, Tok::LBracket, Tok::Str("k".into()), Tok::RBracket,
        ];
    }

    #[test]
    fn positions_are_byte_offsets() {
        let t = tokenize(r#"name == "é""#).unwrap();
        assert_eq!(
            t.iter().map(|t| (t.start, t.end)).collect::<Vec<_>>(),
            vec![(0, 4), (5, 7), (8, 12), (12, 12)]
        );
        assert_eq!(t[2].text, "\"é\"");
    }

    macro_rules! lex_error_cases {
        ($($name:ident: $src:expr => $at:expr, $msg:expr;)*) => {$(
            #[test]
            fn $name() {
                let e = lex_err($src);
                assert_eq!((e.at, e.message.as_str()), ($at, $msg));
            }
        )*};
    }

    lex_error_cases! {
        unterminated_string: r#"name == "abc"# => 8, "unterminated string";
        unknown_escape: r#""a\qb""# => 2, "invalid escape `\\q` in string";
        single_quote_escape_is_invalid_in_double_quotes: r#""\'""# => 1, "invalid escape `\\'` in string";
        short_hex_escape: r#""\x4""# => 1, "invalid escape `\\x` (expected 2 hex digits) in string";
        surrogate_escape: r#""\ud800""# => 1, "invalid escape `\\uD800` (not a code point) in string";
        short_octal_escape: r#""\12""# => 1, "invalid escape (an octal escape takes exactly 3 digits) in string";
        octal_escape_over_255: r#""\400""# => 1, "invalid escape (an octal escape is at most \\377) in string";
        odd_hex_bytes: "0xabc" => 0, "invalid byte literal `0xabc`: odd number of hex digits";
        octal_with_8: "09" => 0, "invalid integer `09`: a leading 0 makes OTTL read it as octal, which has no digits 8 or 9";
        int_overflow: "9223372036854775808" => 0, "integer `9223372036854775808` is out of range for a 64-bit integer";
        float_overflow: "1.0e999" => 0, "float `1.0e999` is out of range";
        double_ampersand: "a && b" => 2, "unexpected `&&`; OTTL writes `and`";
        double_pipe: "a || b" => 2, "unexpected `||`; OTTL writes `or`";
        bang: "!a" => 0, "unexpected `!`; OTTL negates with `not`";
        single_quoted_string: "name == 'x'" => 8, "unexpected `'`; OTTL strings are in double quotes";
        non_ascii_name: "café" => 3, "unexpected character 'é'";
        vertical_tab_is_not_whitespace: "a\x0bb" => 1, "unexpected character '\\u{b}'";
    }
}
