//! `${VAR}` and `${VAR:-default}` interpolation, done on the raw text before YAML parsing so that
//! a docker-compose `environment:` block can drive any value, including numbers and lists.

use std::fmt;

/// A `${...}` reference that could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InterpolationError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for InterpolationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// Replaces every `${NAME}` and `${NAME:-default}` using `lookup`. `$${` stays a literal `${`.
/// Lines that are YAML comments are copied as they are, so a commented example never fails.
pub(crate) fn interpolate(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, InterpolationError> {
    let mut out = String::with_capacity(text.len());
    for (index, line) in text.split_inclusive('\n').enumerate() {
        if line.trim_start().starts_with('#') {
            out.push_str(line);
            continue;
        }
        interpolate_line(line, index + 1, &lookup, &mut out)?;
    }
    Ok(out)
}

fn interpolate_line(
    line: &str,
    line_no: usize,
    lookup: &impl Fn(&str) -> Option<String>,
    out: &mut String,
) -> Result<(), InterpolationError> {
    let mut rest = line;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos..];
        if let Some(stripped) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = stripped;
            continue;
        }
        let Some(body_start) = after.strip_prefix("${") else {
            out.push('$');
            rest = &after[1..];
            continue;
        };
        let Some(end) = body_start.find('}') else {
            return Err(InterpolationError {
                line: line_no,
                message: "unclosed `${`: write `${NAME}` or `${NAME:-default}`".into(),
            });
        };
        let body = &body_start[..end];
        let (name, default) = match body.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (body, None),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(InterpolationError {
                line: line_no,
                message: format!(
                    "`${{{body}}}` is not a variable reference: names are letters, digits and `_`"
                ),
            });
        }
        match (lookup(name), default) {
            (Some(value), _) => out.push_str(&value),
            (None, Some(default)) => out.push_str(default),
            (None, None) => {
                return Err(InterpolationError {
                    line: line_no,
                    message: format!(
                        "environment variable {name} is not set: export it, or write `${{{name}:-default}}`"
                    ),
                })
            }
        }
        rest = &body_start[end + 1..];
    }
    out.push_str(rest);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "PORT" => Some("8443".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn replaces_set_variables_and_defaults() {
        let text = "listen: 0.0.0.0:${PORT}\nup: ${UP:-http://127.0.0.1:80}\ne: '${EMPTY}'\n";
        assert_eq!(
            interpolate(text, env).unwrap(),
            "listen: 0.0.0.0:8443\nup: http://127.0.0.1:80\ne: ''\n"
        );
    }

    #[test]
    fn set_variable_wins_over_default() {
        assert_eq!(interpolate("${PORT:-1}", env).unwrap(), "8443");
    }

    #[test]
    fn unset_variable_names_line_and_fix() {
        let err = interpolate("a: 1\nb: ${MISSING}\n", env).unwrap_err();
        assert_eq!(err.line, 2);
        assert!(err.message.contains("MISSING"), "{}", err.message);
        assert!(err.message.contains(":-default"), "{}", err.message);
    }

    #[test]
    fn comments_and_escapes_are_left_alone() {
        let text = "# use ${NOT_SET} here\nv: $${LITERAL} costs $5\n";
        assert_eq!(
            interpolate(text, env).unwrap(),
            "# use ${NOT_SET} here\nv: ${LITERAL} costs $5\n"
        );
    }

    #[test]
    fn malformed_references_are_errors() {
        assert!(interpolate("x: ${OPEN", env).is_err());
        assert!(interpolate("x: ${bad name}", env).is_err());
        assert!(interpolate("x: ${}", env).is_err());
    }
}
