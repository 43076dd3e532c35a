//! JSON as text, reshaped without reordering: QEMU writes its members in its own order and
//! libvirt prints them in that order, while serde_json's `Value` sorts them (its
//! `preserve_order` feature would change every JSON oxvirt writes). A small scanner over JSON
//! that serde_json has already checked: `qemu-monitor-command`'s answers and
//! `qemu-monitor-event`'s data, compact or indented as virsh prints them.

/// The tokens of JSON text: structure characters, and scalars (strings with their quotes and
/// escapes, numbers, literals) as they are written.
pub fn tokens(json: &str) -> Vec<&str> {
    let bytes = json.as_bytes();
    let mut tokens = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        match bytes[at] {
            b' ' | b'\t' | b'\n' | b'\r' => at += 1,
            b'{' | b'}' | b'[' | b']' | b':' | b',' => {
                tokens.push(&json[at..at + 1]);
                at += 1;
            }
            b'"' => {
                let start = at;
                at = string_end(bytes, at);
                tokens.push(&json[start..at]);
            }
            _ => {
                let start = at;
                while at < bytes.len() && !b" \t\n\r{}[]:,\"".contains(&bytes[at]) {
                    at += 1;
                }
                tokens.push(&json[start..at]);
            }
        }
    }
    tokens
}

/// Where the JSON string that opens at `start` (its `"`) ends: just past its closing quote.
fn string_end(bytes: &[u8], start: usize) -> usize {
    let mut at = start + 1;
    while at < bytes.len() && bytes[at] != b'"' {
        at += if bytes[at] == b'\\' { 2 } else { 1 };
    }
    (at + 1).min(bytes.len())
}

/// JSON without whitespace between tokens, as libvirt prints it.
pub fn compact(json: &str) -> String {
    tokens(json).concat()
}

/// JSON indented by two spaces a level, as libvirt's `--pretty` prints it (an empty object or
/// array keeps an empty line inside, as libvirt's printer leaves it).
pub fn indent(json: &str) -> String {
    let mut out = String::new();
    let mut depth = 0usize;
    let mut fresh = false; // just opened a container: its first member starts on a new line
    for token in tokens(json) {
        match token {
            "{" | "[" => {
                if fresh {
                    out.push_str(&"  ".repeat(depth));
                }
                out.push_str(token);
                out.push('\n');
                depth += 1;
                fresh = true;
            }
            "}" | "]" => {
                depth = depth.saturating_sub(1);
                out.push('\n');
                out.push_str(&"  ".repeat(depth));
                out.push_str(token);
                fresh = false;
            }
            "," => {
                out.push_str(",\n");
                fresh = true;
            }
            ":" => {
                out.push_str(": ");
                fresh = false;
            }
            scalar => {
                if fresh {
                    out.push_str(&"  ".repeat(depth));
                }
                out.push_str(scalar);
                fresh = false;
            }
        }
    }
    out
}

/// The text of member `key` of the top-level object of `json`, as written.
pub fn top_level_member<'a>(json: &'a str, key: &str) -> Option<&'a str> {
    let wanted = serde_json::Value::String(key.to_string()).to_string();
    let bytes = json.as_bytes();
    let mut depth = 0usize;
    let mut at = 0;
    let mut expecting_key = false;
    while at < bytes.len() {
        match bytes[at] {
            b'{' | b'[' => {
                depth += 1;
                expecting_key = depth == 1 && bytes[at] == b'{';
                at += 1;
            }
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                at += 1;
            }
            b',' => {
                expecting_key = depth == 1;
                at += 1;
            }
            b'"' => {
                let start = at;
                at = string_end(bytes, at);
                if expecting_key && depth == 1 && json.get(start..at) == Some(wanted.as_str()) {
                    return member_value(json, at);
                }
                expecting_key = false;
            }
            _ => at += 1,
        }
    }
    None
}

/// The value after the key that ends at `at` (past the `:`), up to the `,` or `}` that ends
/// it at its own level.
fn member_value(json: &str, at: usize) -> Option<&str> {
    let bytes = json.as_bytes();
    let colon = at + json[at..].find(':')?;
    let start = colon + 1;
    let mut depth = 0usize;
    let mut i = start;
    while i < bytes.len() {
        match bytes[i] {
            b'{' | b'[' => depth += 1,
            b'}' | b']' if depth == 0 => return Some(json[start..i].trim()),
            b'}' | b']' => depth -= 1,
            b',' if depth == 0 => return Some(json[start..i].trim()),
            b'"' => {
                i = string_end(bytes, i);
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    // QEMU's own spacing, as it writes answers on the wire.
    const ANSWER: &str =
        r#"{"return": {"status": "running", "singlestep": false, "running": true}, "id": 7}"#;

    #[test]
    fn compact_keeps_qemus_order() {
        assert_eq!(
            compact(ANSWER),
            r#"{"return":{"status":"running","singlestep":false,"running":true},"id":7}"#
        );
        assert_eq!(compact(r#"{"a": "x, y: {z}"}"#), r#"{"a":"x, y: {z}"}"#);
    }

    #[test]
    fn indent_is_libvirts() {
        assert_eq!(
            indent(ANSWER),
            "{\n  \"return\": {\n    \"status\": \"running\",\n    \"singlestep\": false,\n    \"running\": true\n  },\n  \"id\": 7\n}"
        );
        assert_eq!(
            indent(r#"{"return": [], "id": 1}"#),
            "{\n  \"return\": [\n\n  ],\n  \"id\": 1\n}"
        );
        assert_eq!(
            indent(r#"{"return": [{"a": 1}]}"#),
            "{\n  \"return\": [\n    {\n      \"a\": 1\n    }\n  ]\n}"
        );
    }

    #[test]
    fn the_return_member_is_found_at_the_top_only() {
        assert_eq!(
            top_level_member(ANSWER, "return"),
            Some(r#"{"status": "running", "singlestep": false, "running": true}"#)
        );
        assert_eq!(
            top_level_member(r#"{"id": 1, "return": "a \"b\", c"}"#, "return"),
            Some(r#""a \"b\", c""#)
        );
        assert_eq!(
            top_level_member(
                r#"{"id": 1, "error": {"return": 1, "class": "GenericError"}}"#,
                "return"
            ),
            None
        );
    }
}
