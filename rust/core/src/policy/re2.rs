//! Go's `regexp` (RE2 syntax, `regexp.Compile`) on Rust's `regex` crate, for every policy that takes a regular
//! expression (`string_attribute` with `enabled_regex_matching`, OTTL `IsMatch`), as the reference compiles them.
//!
//! The two accept nearly the same syntax and both guarantee linear time, but differ where a pattern silently
//! matches differently, and each accepts some patterns the other refuses. This rewrites a Go pattern into a Rust
//! one with Go's meaning, and refuses what Go refuses, saying so:
//!
//! - `\d \w \s \b` (and negations) are ASCII-only in Go (`\s` is `[\t\n\f\r ]`, without `\v`), Unicode-aware in
//!   Rust: they become explicit ASCII classes (`[0-9]`, `[0-9A-Za-z_]`, …) and `(?-u:\b)`;
//! - `\p{Name}`: Go's names (general categories and their long aliases, scripts, `Any`, `ASCII`, `Assigned`, matched
//!   ignoring case, `_`, `-` and spaces after the first letter) become `\p{gc=…}` / `\p{sc=…}` (Rust's bare script
//!   names mean Script_Extensions, a larger set); other names (Rust's binary properties) are refused;
//! - `\Q…\E` quotes literally (Go has it, Rust does not);
//! - octal escapes `\0`, `\12`, `\123` (Go) become literals (Rust needs a flag for them);
//! - `\<` and `\>` are the literal `<` and `>` in Go, word-boundary assertions in Rust; any escaped ASCII
//!   punctuation is a literal in Go;
//! - a `{` that does not start a valid repetition (`a{`, `x{,3}`) is a literal in Go, an error or a repetition
//!   in Rust; a lone `}` or `]` is a literal;
//! - inside a class, `[` is a literal in Go and starts a nested class in Rust, and `&&`, `--`, `~~` are Rust set
//!   operations: class members are re-emitted escaped;
//! - group names: Go takes `[A-Za-z0-9_]+` (`(?P<1>x)`), Rust other ones; names are not used, groups are
//!   emitted unnamed (duplicates still refused, as Go does);
//! - `(?)` is an empty flag group in Go.
//!
//! Refused as Go refuses them: a counted repetition over 1000 (`x{1001}`, also nested: `(x{10}){101}`), stacked
//! repetition operators (`a**`, `a{2}*`), flags other than `i m s U` (Rust's `x`, `u`, `R`), escapes Go lacks
//! (`\u`, `\e`, `\k`, `\1` …), `\C`, lookarounds and backreferences.

/// The Rust pattern with the meaning of Go pattern `go`, or why Go's `regexp.Compile` refuses it.
pub fn translate(go: &str) -> Result<String, String> {
    let chars: Vec<char> = go.chars().collect();
    let mut out = String::with_capacity(go.len() + 16);
    let mut shape = Shape::default();
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
                    'A' | 'z' => {
                        out.push('\\');
                        out.push(e);
                        i += 2;
                    }
                    'Q' => {
                        i += 2;
                        while i < chars.len() {
                            if chars[i] == '\\' && chars.get(i + 1) == Some(&'E') {
                                i += 2;
                                break;
                            }
                            // Each quoted character is an atom: `\Qab\E*` repeats the `b`.
                            shape.atom();
                            push_literal(&mut out, chars[i]);
                            i += 1;
                        }
                        continue;
                    }
                    'p' | 'P' => {
                        i = unicode_class(&chars, i, &mut out)?;
                    }
                    _ => {
                        let (v, end) = escape(&chars, i)?;
                        push_literal(&mut out, v);
                        i = end;
                    }
                }
                shape.atom();
            }
            '[' => {
                i = class(&chars, i, &mut out)?;
                shape.atom();
            }
            '(' => {
                i = group(&chars, i, &mut out, &mut shape)?;
            }
            ')' => {
                shape.close();
                out.push(')');
                i += 1;
            }
            '|' => {
                shape.alternate();
                out.push('|');
                i += 1;
            }
            '*' | '+' | '?' => {
                shape.repeat(None, &chars, i, i + 1)?;
                out.push(c);
                i += 1;
                if chars.get(i) == Some(&'?') {
                    out.push('?');
                    i += 1;
                }
            }
            '{' => match repeat_end(&chars, i) {
                Some((end, min, max)) => {
                    if min > 1000 || max.is_some_and(|m| m > 1000) || max.is_some_and(|m| m < min) {
                        return Err(format!(
                            "invalid repeat count `{}` (Go's regexp refuses counts over 1000)",
                            chars[i..end].iter().collect::<String>()
                        ));
                    }
                    shape.repeat(Some((min, max)), &chars, i, end)?;
                    out.extend(&chars[i..end]);
                    i = end;
                    if chars.get(i) == Some(&'?') {
                        out.push('?');
                        i += 1;
                    }
                }
                None => {
                    out.push_str(r"\{");
                    shape.atom();
                    i += 1;
                }
            },
            '}' | ']' => {
                out.push('\\');
                out.push(c);
                shape.atom();
                i += 1;
            }
            _ => {
                out.push(c);
                shape.atom();
                i += 1;
            }
        }
    }
    Ok(out)
}

/// Compiles Go pattern `go` with Go's meaning; the error says why Go refuses it (or, rarely, why Rust does).
pub fn compile(go: &str) -> Result<regex::Regex, String> {
    let rust = translate(go)?;
    regex::RegexBuilder::new(&rust)
        .size_limit(SIZE_LIMIT)
        .build()
        .map_err(|e| rust_refused(&e))
}

/// Compiles Go patterns `go` into one set (any-match), each with Go's meaning; the error names the pattern's
/// index and why it is refused.
pub fn compile_set(go: &[String]) -> Result<regex::RegexSet, (usize, String)> {
    let mut rust = Vec::with_capacity(go.len());
    for (i, p) in go.iter().enumerate() {
        compile(p).map_err(|why| (i, why))?;
        rust.push(translate(p).map_err(|why| (i, why))?);
    }
    regex::RegexSetBuilder::new(&rust)
        .size_limit(SIZE_LIMIT.saturating_mul(go.len().max(1)))
        .build()
        .map_err(|e| (0, rust_refused(&e)))
}

/// Rust's compiled-size limit. Go allows a program of about 3.3 million instructions (`\pL{1000}` is well
/// within it); Rust's default 10 MiB refuses such patterns, so the limit is raised to take what Go takes.
const SIZE_LIMIT: usize = 256 << 20;

fn rust_refused(e: &regex::Error) -> String {
    match e {
        regex::Error::CompiledTooBig(limit) => format!(
            "the compiled pattern exceeds tailsample's limit of {limit} bytes (Go's regexp may accept it; \
             use fewer or smaller counted repetitions)"
        ),
        _ => last_line(&e.to_string()),
    }
}

/// The useful line of a `regex` error (its last non-empty line, without `error: `; the first lines repeat the
/// pattern with a caret).
fn last_line(s: &str) -> String {
    let line = s
        .lines()
        .rfind(|l| !l.trim().is_empty())
        .unwrap_or(s)
        .trim();
    line.strip_prefix("error: ").unwrap_or(line).to_string()
}

/// What Go's parser checks about repetitions: no operator right after another (`a**`), and no counted
/// repetition whose nested counts multiply past 1000 (`repeatIsValid`).
#[derive(Default)]
struct Shape {
    /// Per open group: the largest count product among its finished items.
    groups: Vec<u32>,
    /// The largest count product in the current group's finished items.
    done: u32,
    /// The count product of the last item (what a repetition applies to), if there is one.
    last: Option<u32>,
    /// The last item was a repetition operator.
    repeated: bool,
}

impl Shape {
    fn atom(&mut self) {
        self.finish_last();
        self.last = Some(1);
    }

    fn finish_last(&mut self) {
        if let Some(l) = self.last.take() {
            self.done = self.done.max(l);
        }
        self.repeated = false;
    }

    fn open(&mut self) {
        self.finish_last();
        self.groups.push(self.done);
        self.done = 0;
    }

    fn close(&mut self) {
        self.finish_last();
        let inner = self.done.max(1);
        self.done = self.groups.pop().unwrap_or(0);
        self.last = Some(inner);
    }

    fn alternate(&mut self) {
        self.finish_last();
    }

    /// A repetition operator over `chars[at..end]`: `None` for `* + ?`, else `{min,max}` (`max` None: `{min,}`).
    fn repeat(
        &mut self,
        count: Option<(u32, Option<u32>)>,
        chars: &[char],
        at: usize,
        end: usize,
    ) -> Result<(), String> {
        let op: String = chars[at..end].iter().collect();
        if self.repeated {
            return Err(format!(
                "invalid nested repetition operator `{op}` (Go's regexp refuses stacked repetitions)"
            ));
        }
        // A missing operand is left for Rust to report ("repetition operator missing expression").
        let Some(sub) = self.last else { return Ok(()) };
        let product = match count {
            None => sub,
            Some((min, max)) => {
                let m = max.unwrap_or(min);
                if m == 0 {
                    1
                } else {
                    let p = m.saturating_mul(sub);
                    if (min >= 2 || max.is_some_and(|m| m >= 2)) && p > 1000 {
                        return Err(format!(
                            "invalid repeat count `{op}`: nested repetitions multiply to more than 1000, which \
                             Go's regexp refuses"
                        ));
                    }
                    p.min(1001)
                }
            }
        };
        self.last = Some(product);
        self.repeated = true;
        Ok(())
    }
}

/// A group opening at `chars[i] == '('`, as Go's parser reads it; returns the index after the opening.
fn group(chars: &[char], i: usize, out: &mut String, shape: &mut Shape) -> Result<usize, String> {
    if chars.get(i + 1) != Some(&'?') {
        shape.open();
        out.push('(');
        return Ok(i + 1);
    }
    let named = match (chars.get(i + 2), chars.get(i + 3)) {
        (Some('P'), Some('<')) => Some(i + 4),
        (Some('<'), _) => Some(i + 3),
        _ => None,
    };
    if let Some(start) = named {
        let Some(len) = chars[start..].iter().position(|&c| c == '>') else {
            return Err(format!(
                "invalid named capture `{}`",
                chars[i..].iter().collect::<String>()
            ));
        };
        let name: String = chars[start..start + len].iter().collect();
        // Go (since 1.22) accepts a name twice; only capture positions would tell them apart.
        if name.is_empty() || !name.chars().all(|c| c == '_' || c.is_ascii_alphanumeric()) {
            return Err(format!(
                "invalid named capture `{}` (Go's regexp takes names of letters, digits and `_`)",
                chars[i..=start + len].iter().collect::<String>()
            ));
        }
        shape.open();
        out.push('(');
        return Ok(start + len + 1);
    }
    // Flags `(?flags)` or a group with flags `(?flags:re)`: Go knows `i m s U` and one `-`.
    let mut k = i + 2;
    let mut negated = false;
    let mut saw_flag = false;
    let mut flags = String::new();
    while let Some(&c) = chars.get(k) {
        match c {
            'i' | 'm' | 's' | 'U' => {
                saw_flag = true;
                flags.push(c);
            }
            '-' if !negated => {
                negated = true;
                saw_flag = false;
                flags.push(c);
            }
            ':' | ')' if !negated || saw_flag => {
                if c == ':' {
                    shape.open();
                    out.push_str("(?");
                    out.push_str(&flags);
                    out.push(':');
                } else if !flags.is_empty() {
                    // A flag change is not an item: the next repetition still applies to what came before.
                    out.push_str("(?");
                    out.push_str(&flags);
                    out.push(')');
                }
                return Ok(k + 1);
            }
            _ => break,
        }
        k += 1;
    }
    let end = (k + 1).min(chars.len());
    Err(format!(
        "invalid or unsupported Perl syntax `{}` (Go's regexp knows the flags i, m, s and U, and no lookaround)",
        chars[i..end].iter().collect::<String>()
    ))
}

/// An escape outside a class that stands for one character (Go's `parseEscape`); returns it and the index after.
fn escape(chars: &[char], i: usize) -> Result<(char, usize), String> {
    class_char(chars, i).map_err(|e| match chars.get(i + 1) {
        Some('C') => {
            "invalid escape sequence: `\\C` (Go's regexp does not support matching single bytes)"
                .into()
        }
        Some(d @ '1'..='9') => {
            format!("invalid escape sequence: `\\{d}` (backreferences are not supported)")
        }
        _ => e,
    })
}

/// Go's Unicode class `\pN`, `\p{Name}`, `\p{^Name}`, `\PN` at `chars[i] == '\\'`, emitted with Go's meaning;
/// returns the index after it.
fn unicode_class(chars: &[char], i: usize, out: &mut String) -> Result<usize, String> {
    let end = unicode_class_end(chars, i)?;
    let seq: String = chars[i..end].iter().collect();
    let mut negated = chars[i + 1] == 'P';
    let mut name: &str = if chars.get(i + 2) == Some(&'{') {
        &seq[3..seq.len() - 1]
    } else {
        &seq[2..]
    };
    if let Some(rest) = name.strip_prefix('^') {
        negated = !negated;
        name = rest;
    }
    let canonical = canonical_name(name);
    let Ok(at) = UNICODE_NAMES.binary_search_by(|(k, _)| k.cmp(&canonical.as_str())) else {
        return Err(format!(
            "invalid character class range: `{seq}` (not a Unicode category or script name Go's regexp knows)"
        ));
    };
    let mut class = UNICODE_NAMES[at].1;
    if class == "gc=Cs" {
        // Surrogates: a category Rust has no table for; no string contains one.
        class = "Any";
        negated = !negated;
    }
    out.push_str(if negated { r"\P{" } else { r"\p{" });
    out.push_str(class);
    out.push('}');
    Ok(end)
}

/// The POSIX class names Go's `regexp` (and Rust's) knows.
const POSIX_CLASSES: &[&str] = &[
    "alnum", "alpha", "ascii", "blank", "cntrl", "digit", "graph", "lower", "print", "punct",
    "space", "upper", "word", "xdigit",
];

/// Go's `canonicalName`: first letter upper case, the rest lower case, without `_`, `-` and spaces.
fn canonical_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars().filter(|c| !matches!(c, '_' | '-' | ' ')) {
        if out.is_empty() {
            out.push(c.to_ascii_uppercase());
        } else {
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

/// The names Go's `regexp` (Go 1.26, Unicode 15) accepts in `\p{…}`, canonical, with the Rust class of the
/// same meaning. Generated from Go's `unicode.Categories`, `unicode.CategoryAliases` and `unicode.Scripts`,
/// keeping those `regexp.Compile` accepts (multi-word script names such as `Old_Italic` it does not).
const UNICODE_NAMES: &[(&str, &str)] = &[
    ("Adlam", "sc=Adlam"),
    ("Ahom", "sc=Ahom"),
    ("Any", "Any"),
    ("Arabic", "sc=Arabic"),
    ("Armenian", "sc=Armenian"),
    ("Ascii", "ASCII"),
    ("Assigned", "Assigned"),
    ("Avestan", "sc=Avestan"),
    ("Balinese", "sc=Balinese"),
    ("Bamum", "sc=Bamum"),
    ("Batak", "sc=Batak"),
    ("Bengali", "sc=Bengali"),
    ("Bhaiksuki", "sc=Bhaiksuki"),
    ("Bopomofo", "sc=Bopomofo"),
    ("Brahmi", "sc=Brahmi"),
    ("Braille", "sc=Braille"),
    ("Buginese", "sc=Buginese"),
    ("Buhid", "sc=Buhid"),
    ("C", "gc=C"),
    ("Carian", "sc=Carian"),
    ("Casedletter", "gc=LC"),
    ("Cc", "gc=Cc"),
    ("Cf", "gc=Cf"),
    ("Chakma", "sc=Chakma"),
    ("Cham", "sc=Cham"),
    ("Cherokee", "sc=Cherokee"),
    ("Chorasmian", "sc=Chorasmian"),
    ("Closepunctuation", "gc=Pe"),
    ("Cn", "gc=Cn"),
    ("Cntrl", "gc=Cc"),
    ("Co", "gc=Co"),
    ("Combiningmark", "gc=M"),
    ("Common", "sc=Common"),
    ("Connectorpunctuation", "gc=Pc"),
    ("Control", "gc=Cc"),
    ("Coptic", "sc=Coptic"),
    ("Cs", "gc=Cs"),
    ("Cuneiform", "sc=Cuneiform"),
    ("Currencysymbol", "gc=Sc"),
    ("Cypriot", "sc=Cypriot"),
    ("Cyrillic", "sc=Cyrillic"),
    ("Dashpunctuation", "gc=Pd"),
    ("Decimalnumber", "gc=Nd"),
    ("Deseret", "sc=Deseret"),
    ("Devanagari", "sc=Devanagari"),
    ("Digit", "gc=Nd"),
    ("Dogra", "sc=Dogra"),
    ("Duployan", "sc=Duployan"),
    ("Elbasan", "sc=Elbasan"),
    ("Elymaic", "sc=Elymaic"),
    ("Enclosingmark", "gc=Me"),
    ("Ethiopic", "sc=Ethiopic"),
    ("Finalpunctuation", "gc=Pf"),
    ("Format", "gc=Cf"),
    ("Georgian", "sc=Georgian"),
    ("Glagolitic", "sc=Glagolitic"),
    ("Gothic", "sc=Gothic"),
    ("Grantha", "sc=Grantha"),
    ("Greek", "sc=Greek"),
    ("Gujarati", "sc=Gujarati"),
    ("Gurmukhi", "sc=Gurmukhi"),
    ("Han", "sc=Han"),
    ("Hangul", "sc=Hangul"),
    ("Hanunoo", "sc=Hanunoo"),
    ("Hatran", "sc=Hatran"),
    ("Hebrew", "sc=Hebrew"),
    ("Hiragana", "sc=Hiragana"),
    ("Inherited", "sc=Inherited"),
    ("Initialpunctuation", "gc=Pi"),
    ("Javanese", "sc=Javanese"),
    ("Kaithi", "sc=Kaithi"),
    ("Kannada", "sc=Kannada"),
    ("Katakana", "sc=Katakana"),
    ("Kawi", "sc=Kawi"),
    ("Kharoshthi", "sc=Kharoshthi"),
    ("Khmer", "sc=Khmer"),
    ("Khojki", "sc=Khojki"),
    ("Khudawadi", "sc=Khudawadi"),
    ("L", "gc=L"),
    ("Lao", "sc=Lao"),
    ("Latin", "sc=Latin"),
    ("Lc", "gc=LC"),
    ("Lepcha", "sc=Lepcha"),
    ("Letter", "gc=L"),
    ("Letternumber", "gc=Nl"),
    ("Limbu", "sc=Limbu"),
    ("Lineseparator", "gc=Zl"),
    ("Lisu", "sc=Lisu"),
    ("Ll", "gc=Ll"),
    ("Lm", "gc=Lm"),
    ("Lo", "gc=Lo"),
    ("Lowercaseletter", "gc=Ll"),
    ("Lt", "gc=Lt"),
    ("Lu", "gc=Lu"),
    ("Lycian", "sc=Lycian"),
    ("Lydian", "sc=Lydian"),
    ("M", "gc=M"),
    ("Mahajani", "sc=Mahajani"),
    ("Makasar", "sc=Makasar"),
    ("Malayalam", "sc=Malayalam"),
    ("Mandaic", "sc=Mandaic"),
    ("Manichaean", "sc=Manichaean"),
    ("Marchen", "sc=Marchen"),
    ("Mark", "gc=M"),
    ("Mathsymbol", "gc=Sm"),
    ("Mc", "gc=Mc"),
    ("Me", "gc=Me"),
    ("Medefaidrin", "sc=Medefaidrin"),
    ("Miao", "sc=Miao"),
    ("Mn", "gc=Mn"),
    ("Modi", "sc=Modi"),
    ("Modifierletter", "gc=Lm"),
    ("Modifiersymbol", "gc=Sk"),
    ("Mongolian", "sc=Mongolian"),
    ("Mro", "sc=Mro"),
    ("Multani", "sc=Multani"),
    ("Myanmar", "sc=Myanmar"),
    ("N", "gc=N"),
    ("Nabataean", "sc=Nabataean"),
    ("Nandinagari", "sc=Nandinagari"),
    ("Nd", "gc=Nd"),
    ("Newa", "sc=Newa"),
    ("Nko", "sc=Nko"),
    ("Nl", "gc=Nl"),
    ("No", "gc=No"),
    ("Nonspacingmark", "gc=Mn"),
    ("Number", "gc=N"),
    ("Nushu", "sc=Nushu"),
    ("Ogham", "sc=Ogham"),
    ("Openpunctuation", "gc=Ps"),
    ("Oriya", "sc=Oriya"),
    ("Osage", "sc=Osage"),
    ("Osmanya", "sc=Osmanya"),
    ("Other", "gc=C"),
    ("Otherletter", "gc=Lo"),
    ("Othernumber", "gc=No"),
    ("Otherpunctuation", "gc=Po"),
    ("Othersymbol", "gc=So"),
    ("P", "gc=P"),
    ("Palmyrene", "sc=Palmyrene"),
    ("Paragraphseparator", "gc=Zp"),
    ("Pc", "gc=Pc"),
    ("Pd", "gc=Pd"),
    ("Pe", "gc=Pe"),
    ("Pf", "gc=Pf"),
    ("Phoenician", "sc=Phoenician"),
    ("Pi", "gc=Pi"),
    ("Po", "gc=Po"),
    ("Privateuse", "gc=Co"),
    ("Ps", "gc=Ps"),
    ("Punct", "gc=P"),
    ("Punctuation", "gc=P"),
    ("Rejang", "sc=Rejang"),
    ("Runic", "sc=Runic"),
    ("S", "gc=S"),
    ("Samaritan", "sc=Samaritan"),
    ("Saurashtra", "sc=Saurashtra"),
    ("Sc", "gc=Sc"),
    ("Separator", "gc=Z"),
    ("Sharada", "sc=Sharada"),
    ("Shavian", "sc=Shavian"),
    ("Siddham", "sc=Siddham"),
    ("Sinhala", "sc=Sinhala"),
    ("Sk", "gc=Sk"),
    ("Sm", "gc=Sm"),
    ("So", "gc=So"),
    ("Sogdian", "sc=Sogdian"),
    ("Soyombo", "sc=Soyombo"),
    ("Spaceseparator", "gc=Zs"),
    ("Spacingmark", "gc=Mc"),
    ("Sundanese", "sc=Sundanese"),
    ("Surrogate", "gc=Cs"),
    ("Symbol", "gc=S"),
    ("Syriac", "sc=Syriac"),
    ("Tagalog", "sc=Tagalog"),
    ("Tagbanwa", "sc=Tagbanwa"),
    ("Takri", "sc=Takri"),
    ("Tamil", "sc=Tamil"),
    ("Tangsa", "sc=Tangsa"),
    ("Tangut", "sc=Tangut"),
    ("Telugu", "sc=Telugu"),
    ("Thaana", "sc=Thaana"),
    ("Thai", "sc=Thai"),
    ("Tibetan", "sc=Tibetan"),
    ("Tifinagh", "sc=Tifinagh"),
    ("Tirhuta", "sc=Tirhuta"),
    ("Titlecaseletter", "gc=Lt"),
    ("Toto", "sc=Toto"),
    ("Ugaritic", "sc=Ugaritic"),
    ("Unassigned", "gc=Cn"),
    ("Uppercaseletter", "gc=Lu"),
    ("Vai", "sc=Vai"),
    ("Vithkuqi", "sc=Vithkuqi"),
    ("Wancho", "sc=Wancho"),
    ("Yezidi", "sc=Yezidi"),
    ("Yi", "sc=Yi"),
    ("Z", "gc=Z"),
    ("Zl", "gc=Zl"),
    ("Zp", "gc=Zp"),
    ("Zs", "gc=Zs"),
];

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

/// A Go repetition `{n}`, `{n,}` or `{n,m}` at `chars[i] == '{'`, if it is one: the index after it, `n` and `m`
/// (None for `{n,}`). Counts too large for a `u32` read as `u32::MAX` (over 1000: refused all the same).
fn repeat_end(chars: &[char], i: usize) -> Option<(usize, u32, Option<u32>)> {
    let number = |k: &mut usize| {
        let s = *k;
        let mut v: u32 = 0;
        while let Some(d) = chars.get(*k).and_then(|c| c.to_digit(10)) {
            v = v.saturating_mul(10).saturating_add(d);
            *k += 1;
        }
        (*k > s).then_some(v)
    };
    let mut k = i + 1;
    let min = number(&mut k)?;
    let max = if chars.get(k) == Some(&',') {
        k += 1;
        number(&mut k)
    } else {
        Some(min)
    };
    (chars.get(k) == Some(&'}')).then_some((k + 1, min, max))
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
        // POSIX class [:alpha:] (and [:^alpha:]): same names and meaning in both; Go refuses other names.
        if c == '[' && chars.get(k + 1) == Some(&':') {
            if let Some(p) = chars[k + 2..].windows(2).position(|w| w == [':', ']']) {
                let end = k + 2 + p + 2;
                let name: String = chars[k + 2..end - 2].iter().collect();
                if !POSIX_CLASSES.contains(&name.strip_prefix('^').unwrap_or(&name)) {
                    return Err(format!(
                        "invalid character class range: `[:{name}:]` (not a POSIX class name Go's regexp knows)"
                    ));
                }
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
                    k = unicode_class(chars, k, out)?;
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
        compile(pattern)
            .unwrap_or_else(|e| panic!("{pattern}: {e}"))
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
        // The issue's cases (string_attribute `route="éfoo"`), as Go 1.26's regexp decides them.
        word_run_stops_at_accented_letter: r"^\w+$", "éfoo" => false;
        ascii_word_boundary_after_accented_letter: r"\bfoo\b", "éfoo" => true;
        arabic_indic_digit_is_not_a_digit: r"\d", "٣" => false;
        fullwidth_digit_is_not_a_digit: r"\d", "３" => false;
        fold_kelvin_sign: "(?i)k", "\u{212A}" => true;
        fold_long_s: "(?i)S", "\u{17F}" => true;
        fold_word_class_takes_kelvin_sign: r"(?i)\w", "\u{212A}" => true;
        fold_negated_word_class_excludes_kelvin_sign: r"(?i)^\W$", "\u{212A}" => false;
        fold_sigma: "(?i)^σ+$", "Σςσ" => true;
        fold_is_simple_not_full: "(?i)^ss$", "ß" => false;
        // \p names: Go's Script (Rust's bare name is Script_Extensions), categories, long aliases, any case.
        script_is_script_not_extensions: r"^\p{Greek}$", "\u{342}" => false;
        script_name_any_case: r"^\p{greek}$", "α" => true;
        category_long_alias: r"^\p{Uppercase_Letter}$", "A" => true;
        negated_inside_braces: r"^\p{^Greek}$", "a" => true;
        surrogates_match_nothing: r"\p{Cs}", "a" => false;
        not_surrogates_match_anything: r"^\P{Cs}$", "a" => true;
        // Go-only syntax taken with Go's meaning.
        group_name_starting_with_digit: "^(?P<1>a)$", "a" => true;
        group_name_twice: "^(?<n>a)(?<n>b)$", "ab" => true;
        empty_flag_group: "^(?)a$", "a" => true;
        escaped_punctuation: r"^\%\'\ $", "%' " => true;
        quoted_then_repeated_repeats_last_char: r"^\Qab\E{2}$", "abb" => true;
        thousand_repetitions: "^x{1000}$", &"x".repeat(1000) => true;
        nested_counts_up_to_1000: "^(x{10}){100}$", &"x".repeat(1000) => true;
        zero_count_does_not_multiply: "^((x{500}){0}){1000}$", "" => true;
        rust_boundary_syntax_is_a_literal_brace: r"a\b{start}x", "a{start}x" => true;
        star_does_not_count: "^(x*){1000}$", "xx" => true;
        large_unicode_repetition: r"^\pL{1000}$", &"é".repeat(1000) => true;
    }

    /// Scenario: a pattern Go's `regexp.Compile` refuses. Guarantees: refused, with a message naming the reason
    /// (and, where Rust would have taken it, that it is Go's rule).
    macro_rules! go_refuses {
        ($($name:ident: $pattern:expr => $message:expr;)*) => {$(
            #[test]
            fn $name() {
                let e = compile($pattern).expect_err($pattern);
                assert!(e.contains($message), "{}: {e}", $pattern);
            }
        )*};
    }

    go_refuses! {
        repeat_over_1000: "x{1001}" => "invalid repeat count `{1001}` (Go's regexp refuses counts over 1000)";
        repeat_max_over_1000: "x{1,1001}" => "refuses counts over 1000";
        nested_repeats_over_1000: "(x{10}){101}" => "nested repetitions multiply to more than 1000";
        nested_min_only_over_1000: "(?:x{2}){501,}" => "nested repetitions multiply to more than 1000";
        stacked_stars: "a**" => "invalid nested repetition operator `*`";
        stacked_counts: "a{2}{3}" => "invalid nested repetition operator `{3}`";
        doubled_non_greedy: "a*??" => "invalid nested repetition operator `?`";
        verbose_flag: "(?x)a b" => "invalid or unsupported Perl syntax `(?x`";
        unicode_flag: "(?u)a" => "invalid or unsupported Perl syntax `(?u`";
        crlf_flag: "(?R)a" => "invalid or unsupported Perl syntax `(?R`";
        dangling_negation: "(?i-)a" => "invalid or unsupported Perl syntax";
        lookahead: "(?=a)" => "no lookaround";
        rust_unicode_escape: r"\u0041" => r"invalid escape sequence: `\u`";
        rust_long_unicode_escape: r"\U00000041" => r"invalid escape sequence: `\U`";
        backreference: r"(a)\1" => "invalid escape sequence";
        any_byte: r"\C" => "does not support matching single bytes";
        group_name_with_dot: "(?P<a.b>x)" => "invalid named capture `(?P<a.b>`";
        binary_property: r"\p{Alphabetic}" => "not a Unicode category or script name Go's regexp knows";
        script_property_syntax: r"\p{sc=Greek}" => "not a Unicode category or script name";
        multi_word_script: r"\p{Old_Italic}" => "not a Unicode category or script name";
        unknown_posix_class: "[[:foo:]]" => "invalid character class range: `[:foo:]`";
        word_boundary_in_class: r"[\b]" => r"invalid escape sequence: `\b`";
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
