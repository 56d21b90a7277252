//! How text is spelled in the reference's Markdown: code spans, and descriptions made safe for
//! one line or a table cell.

/// Inline code; a double backtick fence when the text holds a backtick.
pub(super) fn code(text: &str) -> String {
    if text.contains('`') {
        format!("`` {text} ``")
    } else {
        format!("`{text}`")
    }
}

/// Inline code inside a table cell, where `|` must be escaped even in code.
pub(super) fn table_code(text: &str) -> String {
    code(text).replace('|', "\\|")
}

pub(super) fn code_list(items: &[String]) -> String {
    items.iter().map(|i| code(i)).collect::<Vec<_>>().join(", ")
}

pub(super) fn table_code_list(items: &[String]) -> String {
    items
        .iter()
        .map(|i| table_code(i))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A description as one line of Markdown: whitespace collapsed, `<` outside code spans
/// escaped (else `<suite>` would read as an HTML tag) and, in a table, every `|` escaped.
pub(super) fn escape(text: &str, in_table: bool) -> String {
    let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut out = String::with_capacity(collapsed.len());
    let mut in_code = false;
    for ch in collapsed.chars() {
        match ch {
            '`' => {
                in_code = !in_code;
                out.push(ch);
            }
            '|' if in_table => out.push_str("\\|"),
            '<' if !in_code => out.push_str("&lt;"),
            _ => out.push(ch),
        }
    }
    out
}
