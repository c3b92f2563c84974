//! Fields of the text log format, written so that one event is always exactly one line: every
//! field value is double-quoted with `"` `\` and control characters escaped, and the message is
//! escaped the same way. Values come from clients (paths, reasons) and certificates (a CN may
//! hold a CR LF), and a raw one could otherwise end the line and forge the next, or fake a
//! `key=value` field with a space and `=`.

use std::fmt;

use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::{FormatFields, Writer};

/// `FormatFields` for `log.format: text`: `message key="value" key="value"`.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct QuotedFields;

impl<'writer> FormatFields<'writer> for QuotedFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        let mut visitor = Visitor {
            writer: &mut writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct Visitor<'a, 'writer> {
    writer: &'a mut Writer<'writer>,
    first: bool,
    result: fmt::Result,
}

impl Visitor<'_, '_> {
    fn field(&mut self, name: &str, value: &str) {
        // A `log` record (Pingora logs through the `log` crate) carries its metadata as
        // `log.target`, `log.file`, ... fields; the formatter already printed its target from
        // them, as tracing-subscriber's own field formatter skips them.
        if name.starts_with("log.") {
            return;
        }
        if self.result.is_ok() {
            self.result = self.write_field(name, value);
        }
    }

    fn write_field(&mut self, name: &str, value: &str) -> fmt::Result {
        if !self.first {
            self.writer.write_char(' ')?;
        }
        self.first = false;
        if name == "message" {
            return escape_into(&mut *self.writer, value);
        }
        // Field names are identifiers in our code; a raw identifier keeps no `r#`.
        self.writer.write_str(name.trim_start_matches("r#"))?;
        self.writer.write_str("=\"")?;
        escape_into(&mut *self.writer, value)?;
        self.writer.write_char('"')
    }
}

impl Visit for Visitor<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.field(field.name(), value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // `%value` fields arrive here with a Debug that prints their Display.
        let text = format!("{value:?}");
        self.field(field.name(), &text);
    }
}

/// Writes `value` with `\` `"` and every control or line-breaking character escaped.
pub(crate) fn escape_into(out: &mut impl fmt::Write, value: &str) -> fmt::Result {
    for c in value.chars() {
        match c {
            '\\' => out.write_str("\\\\")?,
            '"' => out.write_str("\\\"")?,
            '\n' => out.write_str("\\n")?,
            '\r' => out.write_str("\\r")?,
            '\t' => out.write_str("\\t")?,
            c if c.is_control() || c == '\u{2028}' || c == '\u{2029}' => {
                write!(out, "\\u{{{:x}}}", u32::from(c))?
            }
            c => out.write_char(c)?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::escape_into;

    fn esc(s: &str) -> String {
        let mut out = String::new();
        escape_into(&mut out, s).unwrap();
        out
    }

    #[test]
    fn escapes_what_could_break_a_line_or_a_field() {
        assert_eq!(
            esc("evil\r\nx-certgate-user: admin"),
            "evil\\r\\nx-certgate-user: admin"
        );
        assert_eq!(esc("a\"b\\c"), "a\\\"b\\\\c");
        assert_eq!(
            esc("\u{0}\u{1b}\u{7f}\u{85}\u{2028}"),
            "\\u{0}\\u{1b}\\u{7f}\\u{85}\\u{2028}"
        );
        assert_eq!(esc("plain é"), "plain é");
    }
}
