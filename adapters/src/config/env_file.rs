//! `env_file`: variables read from files in the format of systemd's `EnvironmentFile=` and
//! compose's `env_file`, so the same file serves all three.
//!
//! One `KEY=VALUE` a line, optionally after `export `; blank lines and lines starting with `#`
//! are skipped. A value is taken literally inside single quotes; inside double quotes `\\`,
//! `\"`, `\n`, `\t` and `\$` are escapes; unquoted, it is trimmed and a ` #` starts a comment.
//! Values span one line.

/// The variables of one file's text, in order; or the 1-based line and what is wrong there.
pub fn parse(text: &str) -> Result<Vec<(String, String)>, (usize, String)> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").map_or(line, str::trim_start);
        let Some((key, value)) = line.split_once('=') else {
            return Err((i + 1, format!("expected KEY=VALUE, found {line:?}")));
        };
        let key = key.trim_end();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err((i + 1, format!("invalid variable name {key:?}")));
        }
        let value = unquote(value.trim_start()).map_err(|why| (i + 1, why))?;
        if value.contains('\0') {
            return Err((
                i + 1,
                format!("the value of {key} contains a NUL character"),
            ));
        }
        out.push((key.to_string(), value));
    }
    Ok(out)
}

fn unquote(v: &str) -> Result<String, String> {
    let mut chars = v.chars();
    let (value, rest) = match chars.next() {
        Some('\'') => {
            let body = chars.as_str();
            let end = body.find('\'').ok_or("a single quote is not closed")?;
            (body[..end].to_string(), &body[end + 1..])
        }
        Some('"') => {
            let mut value = String::new();
            let mut closed = None;
            let body = chars.as_str();
            let mut it = body.char_indices();
            while let Some((at, c)) = it.next() {
                match c {
                    '"' => {
                        closed = Some(at + 1);
                        break;
                    }
                    '\\' => match it.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, 't')) => value.push('\t'),
                        Some((_, c @ ('\\' | '"' | '$'))) => value.push(c),
                        Some((_, c)) => {
                            value.push('\\');
                            value.push(c);
                        }
                        None => return Err("a double quote is not closed".into()),
                    },
                    c => value.push(c),
                }
            }
            let end = closed.ok_or("a double quote is not closed")?;
            (value, &body[end..])
        }
        _ => {
            let value = match v.find(" #").or_else(|| v.find("\t#")) {
                Some(comment) => &v[..comment],
                None => v,
            };
            return Ok(value.trim_end().to_string());
        }
    };
    let rest = rest.trim_start();
    if rest.is_empty() || rest.starts_with('#') {
        Ok(value)
    } else {
        Err(format!("unexpected {rest:?} after the closing quote"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(text: &str) -> Vec<(String, String)> {
        parse(text).unwrap()
    }

    #[test]
    fn lines_comments_quotes_and_export() {
        let text = "# a comment\n\nA=1\nexport B = two words  \nC='lit $x \\n'\nD=\"q \\\"x\\\" \\n\\$y\" # note\nE=v # note\nF=\nG=a=b\n";
        assert_eq!(
            vars(text),
            [
                ("A", "1"),
                ("B", "two words"),
                ("C", "lit $x \\n"),
                ("D", "q \"x\" \n$y"),
                ("E", "v"),
                ("F", ""),
                ("G", "a=b"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        );
    }

    #[test]
    fn mistakes_are_named_with_their_line() {
        assert_eq!(parse("A=1\nnonsense\n").unwrap_err().0, 2);
        assert_eq!(parse("A B=1\n").unwrap_err().0, 1);
        assert!(parse("A=\"open\n").unwrap_err().1.contains("not closed"));
        assert!(parse("A='x' y\n")
            .unwrap_err()
            .1
            .contains("after the closing quote"));
    }
}
