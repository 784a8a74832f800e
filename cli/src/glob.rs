//! Wildcards in an `s3://` argument: which keys a glob matches, and the literal prefix to list.
//!
//! The syntax is s5cmd's, with character classes added:
//! - `*` (and `**`, the same) matches any run of characters, `/` included;
//! - `?` matches any one character;
//! - `[abc]`, `[a-z]`, `[!a-z]` or `[^a-z]` match one character of (or not of) the class; a `]`
//!   right after the `[` (or the `!`) is part of the class;
//! - `\` makes the next character literal (`\*`, `\[`, `\\`).
//!
//! A glob matches a whole key. The keys it can match all start with its literal prefix (the
//! characters before its first wildcard), so a listing of that prefix, filtered, finds them all,
//! in the listing's order. Matching needs no recursion, no allocation, and at most the key's
//! length times the glob's steps.

/// A parsed glob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Glob {
    /// The text it was parsed from.
    text: String,
    /// The characters before the first wildcard, escapes resolved.
    prefix: String,
    /// Everything from the first wildcard on.
    tokens: Vec<Token>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Char(char),
    Any,
    Star,
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

impl Token {
    /// Whether this one-character token matches `c` (never called on `Star`).
    fn matches(&self, c: char) -> bool {
        match self {
            Token::Char(want) => *want == c,
            Token::Any => true,
            Token::Class { negated, ranges } => {
                ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated
            }
            Token::Star => false,
        }
    }
}

/// Whether `text` is meant as a glob: it holds a `*`, `?` or `[`.
pub(crate) fn is_glob(text: &str) -> bool {
    text.contains(['*', '?', '['])
}

impl Glob {
    /// Parses `text`; an unclosed `[`, an empty class, a reversed range or a trailing `\` is an
    /// error that says where.
    pub(crate) fn parse(text: &str) -> Result<Glob, String> {
        let mut tokens = Vec::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            let token = match c {
                '*' => {
                    // `**` is `*`; consecutive stars match what one does.
                    while chars.peek() == Some(&'*') {
                        chars.next();
                    }
                    Token::Star
                }
                '?' => Token::Any,
                '\\' => Token::Char(
                    chars
                        .next()
                        .ok_or_else(|| format!("glob {text:?} ends with a lone \\"))?,
                ),
                '[' => class(&mut chars).map_err(|why| format!("glob {text:?}: {why}"))?,
                c => Token::Char(c),
            };
            tokens.push(token);
        }
        let literal = tokens
            .iter()
            .take_while(|t| matches!(t, Token::Char(_)))
            .count();
        let prefix = tokens[..literal]
            .iter()
            .filter_map(|t| match t {
                Token::Char(c) => Some(*c),
                _ => None,
            })
            .collect();
        tokens.drain(..literal);
        Ok(Glob {
            text: text.to_owned(),
            prefix,
            tokens,
        })
    }

    /// The literal prefix every matching key starts with: what to list.
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The glob as it was written.
    pub(crate) fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the whole of `key` matches.
    pub(crate) fn matches(&self, key: &str) -> bool {
        let Some(rest) = key.strip_prefix(self.prefix.as_str()) else {
            return false;
        };
        let tokens = &self.tokens;
        // Greedy matching that returns to the last `*` on a mismatch. Every other token matches
        // exactly one character, so letting the last star take one more character is the only
        // choice that can still succeed. `k` and the star's `taken` are byte offsets in `rest`.
        let (mut t, mut k) = (0, 0);
        let mut back: Option<(usize, usize)> = None;
        while let Some(c) = rest[k..].chars().next() {
            match tokens.get(t) {
                Some(Token::Star) => {
                    back = Some((t, k));
                    t += 1;
                }
                Some(token) if token.matches(c) => {
                    t += 1;
                    k += c.len_utf8();
                }
                _ => match back {
                    Some((star, taken)) => {
                        let one = rest[taken..].chars().next().map_or(1, char::len_utf8);
                        t = star + 1;
                        k = taken + one;
                        back = Some((star, k));
                    }
                    None => return false,
                },
            }
        }
        tokens[t..].iter().all(|t| *t == Token::Star)
    }
}

/// The class after a `[`, through its `]`.
fn class(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Result<Token, String> {
    let negated = matches!(chars.peek(), Some('!' | '^'));
    if negated {
        chars.next();
    }
    let mut ranges = Vec::new();
    let mut first = true;
    loop {
        let c = match chars.next() {
            None => return Err("a [ is not closed by a ]".to_owned()),
            Some(']') if !first => break,
            Some('\\') => chars
                .next()
                .ok_or_else(|| "a [ is not closed by a ]".to_owned())?,
            Some(c) => c,
        };
        first = false;
        let mut ahead = chars.clone();
        let hi = match (ahead.next(), ahead.next()) {
            (Some('-'), Some(hi)) if hi != ']' => {
                chars.next();
                chars.next();
                if hi == '\\' {
                    chars
                        .next()
                        .ok_or_else(|| "a [ is not closed by a ]".to_owned())?
                } else {
                    hi
                }
            }
            _ => c,
        };
        if hi < c {
            return Err(format!("the range {c}-{hi} in a [...] is reversed"));
        }
        ranges.push((c, hi));
    }
    Ok(Token::Class { negated, ranges })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn glob(text: &str) -> Glob {
        Glob::parse(text).unwrap()
    }

    #[test]
    fn the_literal_prefix_stops_at_the_first_wildcard() {
        assert_eq!(glob("logs/2024-*.json").prefix(), "logs/2024-");
        assert_eq!(glob("a/b?c").prefix(), "a/b");
        assert_eq!(glob("a/[xy]").prefix(), "a/");
        assert_eq!(glob(r"a\*b/*").prefix(), "a*b/");
        assert_eq!(glob("*").prefix(), "");
    }

    #[test]
    fn stars_cross_slashes_and_match_the_whole_key() {
        let g = glob("logs/*.json");
        assert!(g.matches("logs/a.json"));
        assert!(g.matches("logs/2024/01/a.json"));
        assert!(g.matches("logs/.json"));
        assert!(!g.matches("logs/a.json.gz"));
        assert!(!g.matches("other/logs/a.json"));
        assert!(glob("**/x").matches("a/b/x"));
        assert!(glob("a*b*c").matches("abbbcbc"));
        assert!(!glob("a*b*c").matches("abbbcb"));
        assert!(glob("*").matches(""));
        // A star that has to give back multi-byte characters.
        assert!(glob("*é?x").matches("aééüx"));
        assert!(!glob("*é?x").matches("aééü"));
        assert!(glob("ü*ü").matches("üéüü"));
    }

    #[test]
    fn question_marks_and_classes_match_one_character() {
        assert!(glob("a?c").matches("abc"));
        assert!(glob("a?c").matches("a/c"));
        assert!(glob("a?c").matches("aéc"));
        assert!(!glob("a?c").matches("ac"));
        assert!(glob("f[0-9][!a-z]").matches("f1X"));
        assert!(!glob("f[0-9][!a-z]").matches("f1x"));
        assert!(glob("[]x]").matches("]"));
        assert!(glob("[!]]").matches("x"));
        assert!(!glob("[!]]").matches("]"));
        assert!(glob("[a-]").matches("-"));
        assert!(glob(r"[\]]").matches("]"));
        assert!(glob(r"x\?").matches("x?"));
        assert!(!glob(r"x\?").matches("xy"));
    }

    #[test]
    fn malformed_globs_say_what_is_wrong() {
        for (bad, why) in [
            ("a[bc", "not closed"),
            ("a[]", "not closed"),
            ("x\\", "lone"),
            ("[z-a]", "reversed"),
        ] {
            let e = Glob::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }

    #[test]
    fn only_wildcard_characters_make_a_glob() {
        assert!(is_glob("a/*"));
        assert!(is_glob("a[1]"));
        assert!(!is_glob("a/b c/d"));
        assert!(!is_glob(r"a\b"));
    }
}
