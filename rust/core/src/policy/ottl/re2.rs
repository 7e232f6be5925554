//! Go's `regexp` (RE2 syntax, `regexp.Compile`) on Rust's `regex` crate.
//!
//! The two accept nearly the same syntax and both guarantee linear time, but differ where a pattern silently
//! matches differently. This rewrites a Go pattern into a Rust one with Go's meaning:
//!
//! - `\d \w \s \b` (and negations) are ASCII-only in Go (`\s` is `[\t\n\f\r ]`, without `\v`), Unicode-aware in
//!   Rust: they become explicit ASCII classes (`[0-9]`, `[0-9A-Za-z_]`, …) and `(?-u:\b)`;
//! - `\Q…\E` quotes literally (Go has it, Rust does not);
//! - octal escapes `\0`, `\12`, `\123` (Go) become `\x{…}` (Rust needs a flag for them);
//! - `\<` and `\>` are the literal `<` and `>` in Go, word-boundary assertions in Rust;
//! - a `{` that does not start a valid repetition (`a{`, `x{,3}`) is a literal in Go, an error or a repetition
//!   in Rust; a lone `}` or `]` is a literal;
//! - inside a class, `[` is a literal in Go and starts a nested class in Rust, and `&&`, `--`, `~~` are Rust set
//!   operations: class members are re-emitted escaped.
//!
//! Syntax Rust lacks (backreferences like `\1`, `\C`, `\Z`) stays as it is and fails to compile, which is
//! reported as an invalid pattern. Syntax only Rust accepts (`(?x)`, `\p` names Go lacks) is let through.

/// The Rust pattern with the meaning of Go pattern `go`.
pub(crate) fn translate(go: &str) -> Result<String, String> {
    let chars: Vec<char> = go.chars().collect();
    let mut out = String::with_capacity(go.len() + 16);
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\\' => {
                let Some(&e) = chars.get(i + 1) else {
                    return Err("trailing backslash at end of expression".into());
                };
                match e {
                    'd' | 'D' | 'w' | 'W' | 's' | 'S' => {
                        out.push_str(perl_class(e, false));
                        i += 2;
                    }
                    'b' | 'B' => {
                        out.push_str(if e == 'b' { r"(?-u:\b)" } else { r"(?-u:\B)" });
                        i += 2;
                    }
                    'Q' => {
                        i += 2;
                        while i < chars.len() {
                            if chars[i] == '\\' && chars.get(i + 1) == Some(&'E') {
                                i += 2;
                                break;
                            }
                            push_literal(&mut out, chars[i]);
                            i += 1;
                        }
                    }
                    'x' => {
                        let end = if chars.get(i + 2) == Some(&'{') {
                            chars[i + 3..]
                                .iter()
                                .position(|&c| c == '}')
                                .map(|p| i + 3 + p + 1)
                                .ok_or("invalid escape sequence: `\\x{` without `}`")?
                        } else {
                            (i + 4).min(chars.len())
                        };
                        out.extend(&chars[i..end]);
                        i = end;
                    }
                    '<' | '>' => {
                        out.push(e);
                        i += 2;
                    }
                    'p' | 'P' => {
                        let end = unicode_class_end(&chars, i)?;
                        out.extend(&chars[i..end]);
                        i = end;
                    }
                    '0'..='7' => match octal(&chars, i) {
                        Some((v, end)) => {
                            push_literal(&mut out, v);
                            i = end;
                        }
                        None => {
                            // `\1`…`\7` alone: a backreference in Go's syntax, which neither supports.
                            return Err(format!("invalid escape sequence: `\\{e}` (backreferences are not supported)"));
                        }
                    },
                    _ => {
                        out.push('\\');
                        out.push(e);
                        i += 2;
                    }
                }
            }
            '[' => {
                i = class(&chars, i, &mut out)?;
            }
            '{' => match repeat_end(&chars, i) {
                Some(end) => {
                    out.extend(&chars[i..end]);
                    i = end;
                }
                None => {
                    out.push_str(r"\{");
                    i += 1;
                }
            },
            '}' => {
                out.push_str(r"\}");
                i += 1;
            }
            ']' => {
                out.push_str(r"\]");
                i += 1;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// Go's ASCII Perl classes, standalone or (`in_class`) as members of an enclosing class.
fn perl_class(e: char, in_class: bool) -> &'static str {
    match (e, in_class) {
        ('d', false) => "[0-9]",
        ('D', _) => "[^0-9]",
        ('w', false) => "[0-9A-Za-z_]",
        ('W', _) => "[^0-9A-Za-z_]",
        ('s', false) => r"[\t\n\x0C\r ]",
        ('S', _) => r"[^\t\n\x0C\r ]",
        ('d', true) => "0-9",
        ('w', true) => "0-9A-Za-z_",
        (_, true) => r"\t\n\x0C\r ",
        _ => unreachable!("not a Perl class: {e}"),
    }
}

/// A character as a literal, escaped where it is syntax in Rust (in or out of a class).
fn push_literal(out: &mut String, c: char) {
    let meta = matches!(
        c,
        '\\' | '.'
            | '+'
            | '*'
            | '?'
            | '('
            | ')'
            | '|'
            | '['
            | ']'
            | '{'
            | '}'
            | '^'
            | '$'
            | '#'
            | '&'
            | '-'
            | '~'
    );
    if meta {
        out.push('\\');
        out.push(c);
    } else if c.is_control() {
        out.push_str(&format!(r"\x{{{:X}}}", c as u32));
    } else {
        out.push(c);
    }
}

/// Go's octal escape at `chars[i] == '\\'`: `\0` plus up to two octal digits, or a non-zero digit followed by
/// one or two more. Returns the character and the index after it.
fn octal(chars: &[char], i: usize) -> Option<(char, usize)> {
    let first = chars[i + 1];
    let next_is_octal = |k: usize| chars.get(k).is_some_and(|c| ('0'..='7').contains(c));
    if first != '0' && !next_is_octal(i + 2) {
        return None;
    }
    let mut v = first as u32 - '0' as u32;
    let mut k = i + 2;
    while k < i + 4 && next_is_octal(k) {
        v = v * 8 + (chars[k] as u32 - '0' as u32);
        k += 1;
    }
    Some((char::from_u32(v)?, k))
}

/// The end of `\pX` or `\p{Name}` starting at `chars[i] == '\\'`.
fn unicode_class_end(chars: &[char], i: usize) -> Result<usize, String> {
    match chars.get(i + 2) {
        Some('{') => chars[i + 3..]
            .iter()
            .position(|&c| c == '}')
            .map(|p| i + 3 + p + 1)
            .ok_or_else(|| "missing closing } of \\p{".to_string()),
        Some(_) => Ok(i + 3),
        None => Err("invalid character class range: `\\p` at end of expression".into()),
    }
}

/// The end of a Go repetition `{n}`, `{n,}` or `{n,m}` at `chars[i] == '{'`, if it is one.
fn repeat_end(chars: &[char], i: usize) -> Option<usize> {
    let mut k = i + 1;
    let digits = |k: &mut usize| {
        let s = *k;
        while chars.get(*k).is_some_and(char::is_ascii_digit) {
            *k += 1;
        }
        *k > s
    };
    if !digits(&mut k) {
        return None;
    }
    if chars.get(k) == Some(&',') {
        k += 1;
        digits(&mut k);
    }
    (chars.get(k) == Some(&'}')).then_some(k + 1)
}

/// A Go class `[…]` at `chars[i] == '['`, re-emitted as a Rust class; returns the index after it.
fn class(chars: &[char], i: usize, out: &mut String) -> Result<usize, String> {
    let mut k = i + 1;
    out.push('[');
    if chars.get(k) == Some(&'^') {
        out.push('^');
        k += 1;
    }
    let mut first = true;
    loop {
        let Some(&c) = chars.get(k) else {
            return Err("missing closing ]".into());
        };
        if c == ']' && !first {
            out.push(']');
            return Ok(k + 1);
        }
        first = false;
        // POSIX class [:alpha:] (and [:^alpha:]): same names and meaning in both.
        if c == '[' && chars.get(k + 1) == Some(&':') {
            if let Some(p) = chars[k + 2..].windows(2).position(|w| w == [':', ']']) {
                let end = k + 2 + p + 2;
                out.extend(&chars[k..end]);
                k = end;
                continue;
            }
        }
        if c == '\\' {
            match chars.get(k + 1) {
                Some(&e @ ('d' | 'D' | 'w' | 'W' | 's' | 'S')) => {
                    out.push_str(perl_class(e, true));
                    k += 2;
                    continue;
                }
                Some('p' | 'P') => {
                    let end = unicode_class_end(chars, k)?;
                    out.extend(&chars[k..end]);
                    k = end;
                    continue;
                }
                _ => {}
            }
        }
        // A single character, or a range lo-hi ("[a-]" keeps the `-` literal).
        let (lo, next) = class_char(chars, k)?;
        k = next;
        push_literal(out, lo);
        if chars.get(k) == Some(&'-') && chars.get(k + 1).is_some_and(|&c| c != ']') {
            let (hi, next) = class_char(chars, k + 1)?;
            if hi < lo {
                return Err(format!("invalid character class range: `{lo}-{hi}`"));
            }
            out.push('-');
            push_literal(out, hi);
            k = next;
        }
    }
}

/// One character of a class at `k` (an escape or a literal), as Go's `parseClassChar`.
fn class_char(chars: &[char], k: usize) -> Result<(char, usize), String> {
    let c = chars[k];
    if c != '\\' {
        return Ok((c, k + 1));
    }
    let Some(&e) = chars.get(k + 1) else {
        return Err("trailing backslash at end of expression".into());
    };
    let simple = match e {
        'a' => Some('\x07'),
        'f' => Some('\x0c'),
        'n' => Some('\n'),
        'r' => Some('\r'),
        't' => Some('\t'),
        'v' => Some('\x0b'),
        _ => None,
    };
    if let Some(v) = simple {
        return Ok((v, k + 2));
    }
    if ('0'..='7').contains(&e) {
        return octal(chars, k).ok_or_else(|| format!("invalid escape sequence: `\\{e}`"));
    }
    if e == 'x' {
        let (digits, end) = if chars.get(k + 2) == Some(&'{') {
            let close = chars[k + 3..]
                .iter()
                .position(|&c| c == '}')
                .ok_or("invalid escape sequence: `\\x{` without `}`")?;
            (
                chars[k + 3..k + 3 + close].iter().collect::<String>(),
                k + 3 + close + 1,
            )
        } else {
            (
                chars
                    .get(k + 2..k + 4)
                    .map(|s| s.iter().collect())
                    .unwrap_or_default(),
                k + 4,
            )
        };
        let v = u32::from_str_radix(&digits, 16)
            .ok()
            .filter(|_| !digits.is_empty())
            .and_then(char::from_u32)
            .ok_or_else(|| format!("invalid escape sequence: `\\x{digits}`"))?;
        return Ok((v, end));
    }
    if e.is_ascii() && !e.is_ascii_alphanumeric() {
        return Ok((e, k + 2));
    }
    Err(format!("invalid escape sequence: `\\{e}`"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether Go pattern `pattern` matches `text`, through the translation.
    fn go_match(pattern: &str, text: &str) -> bool {
        let rust = translate(pattern).unwrap();
        regex::Regex::new(&rust)
            .unwrap_or_else(|e| panic!("{pattern} -> {rust}: {e}"))
            .is_match(text)
    }

    macro_rules! match_cases {
        ($($name:ident: $pattern:expr, $text:expr => $want:expr;)*) => {$(
            #[test]
            fn $name() {
                assert_eq!(go_match($pattern, $text), $want, "{} on {:?}", $pattern, $text);
            }
        )*};
    }

    match_cases! {
        plain_is_unanchored: "GET", "xGETx" => true;
        anchors: "^GET$", "GET" => true;
        dollar_is_end_of_text_only: "^a$", "a\n" => false;
        multiline_flag: "(?m)^b$", "a\nb\nc" => true;
        dot_excludes_newline: "a.b", "a\nb" => false;
        dot_all_flag: "(?s)a.b", "a\nb" => true;
        case_insensitive_unicode: "(?i)élan", "ÉLAN" => true;
        digit_is_ascii: r"^\d+$", "١٢٣" => false;
        digit_ascii_matches: r"^\d+$", "123" => true;
        not_digit_matches_unicode_digit: r"^\D$", "١" => true;
        word_is_ascii: r"^\w+$", "café" => false;
        word_ascii_matches: r"^\w+$", "cafe_1" => true;
        space_excludes_vertical_tab: r"\s", "\x0b" => false;
        space_excludes_nbsp: r"\s", "\u{a0}" => false;
        space_includes_form_feed: r"\s", "\x0c" => true;
        word_boundary_is_ascii: r"\bé", "é" => false;
        word_boundary_ascii: r"\bab\b", "x ab y" => true;
        not_word_boundary: r"a\Bb", "ab" => true;
        perl_classes_inside_class: r"^[\d\s]+$", "1 2" => true;
        negated_perl_class_inside_class: r"^[\Da]$", "b" => true;
        negated_perl_class_inside_class_excludes: r"^[\D]$", "5" => false;
        unicode_class: r"^\p{Greek}+$", "αβγ" => true;
        unicode_class_short: r"^\pL$", "é" => true;
        posix_class: "^[[:alpha:]]+$", "abc" => true;
        posix_class_is_ascii: "^[[:alpha:]]+$", "é" => false;
        quote_meta: r"\Qa.b*\E", "a.b*" => true;
        quote_meta_is_literal: r"\Qa.b\E", "axb" => false;
        quote_meta_to_end: r"^\Q(x", "(x" => true;
        octal_escape: r"^\101$", "A" => true;
        octal_zero: r"^a\0$", "a\0" => true;
        escaped_angle_is_literal: r"^\<a\>$", "<a>" => true;
        brace_without_count_is_literal: "^a{$", "a{" => true;
        brace_with_empty_min_is_literal: "^x{,3}$", "x{,3}" => true;
        counted_repetition: "^a{2,3}$", "aaa" => true;
        counted_repetition_too_many: "^a{2,3}$", "aaaa" => false;
        lone_closing_brace: "^}$", "}" => true;
        lone_closing_bracket: "^]$", "]" => true;
        bracket_first_in_class_is_literal: "^[]a]+$", "]a" => true;
        open_bracket_in_class_is_literal: "^[a[]+$", "[a" => true;
        ampersands_in_class_are_literal: "^[a&&b]+$", "&" => true;
        tildes_in_class_are_literal: "^[~~]$", "~" => true;
        range_to_hyphen: "^[+--]+$", ",-" => true;
        trailing_hyphen_in_class: "^[a-]+$", "-a" => true;
        hyphen_after_range: "^[a-c-e]+$", "-e" => true;
        escaped_class_chars: r"^[\]\\]+$", "]\\" => true;
        hex_escape_in_class: r"^[\x41-\x43]+$", "ABC" => true;
        negated_class_matches_newline: "^[^a]$", "\n" => true;
        non_greedy: "a+?", "aaa" => true;
        named_group: "(?P<x>a)b", "ab" => true;
        alternation: "^(GET|POST) /", "POST /x" => true;
        hex_escape: r"^\x41\x{263A}$", "A☺" => true;
    }

    macro_rules! error_cases {
        ($($name:ident: $pattern:expr;)*) => {$(
            #[test]
            fn $name() {
                let compiled = translate($pattern).and_then(|p| regex::Regex::new(&p).map_err(|e| e.to_string()));
                assert!(compiled.is_err(), "{} should not compile", $pattern);
            }
        )*};
    }

    error_cases! {
        backreference_is_rejected: r"(a)\1";
        unclosed_group: "(a";
        unclosed_class: "[a";
        reversed_range: "[z-a]";
        trailing_backslash: "a\\";
        nothing_to_repeat: "*a";
        stray_end_quote: r"a\E";
    }
}
