//! oxvirt-xml: the one place oxvirt reads untrusted XML, and its XML escaping.
//!
//! Definitions (domains, networks, pools, volumes) reach the daemon from any local API client, so
//! reading them must stay cheap and safe whatever their shape. roxmltree is fine on ordinary
//! documents, but some costs grow with the shape of a document rather than its size:
//! - elements are parsed recursively, so a few hundred levels of nesting overflow a small stack
//!   (a tokio worker's), which aborts the whole process;
//! - duplicate attributes are found by comparing every pair, so one element with n attributes
//!   costs n²: 50,000 attributes (a few hundred KiB of text) take minutes;
//! - every element that declares a namespace gets a copy of all declarations in scope, each
//!   checked against the element's own: 60 levels of 60 declarations over 20,000 declaring
//!   leaves (380 KiB) ran for minutes.
//!
//! [`Limits::parse`] therefore checks the structural [`Limits`] in one linear pass over the text
//! before roxmltree sees it, then parses with DTDs off (no entity expansion). A refused document
//! gets a [`LimitError`] naming the limit, its value and the line.
//!
//! [`escape_text`] and [`escape_attr`] are the escaping every XML writer of the project uses.

#![forbid(unsafe_code)]

use std::borrow::Cow;

pub use roxmltree;
use roxmltree::Document;

/// Structural limits on an XML document; [`Limits::DEFAULT`] is what oxvirt accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest document, in bytes.
    pub max_bytes: usize,
    /// Deepest element nesting; the root element is level 1.
    pub max_depth: usize,
    /// Most attributes on one element (namespace declarations count as attributes).
    pub max_attributes: usize,
    /// Most nodes: elements, comments, processing instructions and CDATA sections. (Text is not
    /// counted: there is at most one text node between two of these.)
    pub max_nodes: usize,
    /// Most namespace declarations (`xmlns`, `xmlns:x`) in the whole document.
    pub max_namespaces: usize,
}

impl Limits {
    /// The limits oxvirt reads definitions with.
    pub const DEFAULT: Limits = Limits {
        // Definitions are a few KiB; libvirt's biggest test inputs are below 64 KiB.
        max_bytes: 4 << 20,
        // Real definitions nest about 6 deep (domain/devices/disk/source/...); this is also far
        // below the depth at which roxmltree's recursion threatens a 2 MiB worker stack.
        max_depth: 64,
        // The attribute-richest libvirt elements (`<disk><driver>`, `<graphics>`) allow about 20
        // attributes. 64 leaves room and bounds roxmltree's pairwise duplicate check at
        // 64·63/2 comparisons per element, so parsing stays linear in the document's size.
        max_attributes: 64,
        // A large definition has a few hundred elements; this is what the domain parser allowed.
        max_nodes: 200_000,
        // libvirt documents declare a handful (metadata, `qemu:`, `oxvirt:`).
        max_namespaces: 64,
    };

    /// Checks `text` against the limits in one linear pass, without parsing it. Malformed text
    /// passes unless it breaks a limit: the parser reports what is malformed.
    pub fn check(&self, text: &str) -> Result<(), LimitError> {
        if text.len() > self.max_bytes {
            return Err(LimitError {
                limit: Limit::Size,
                max: self.max_bytes,
                line: None,
            });
        }
        Scan::new(text.as_bytes(), self).run()
    }

    /// Checks the limits, then parses `text` with roxmltree (DTDs refused).
    pub fn parse<'input>(&self, text: &'input str) -> Result<Document<'input>, XmlError> {
        self.check(text)?;
        let options = roxmltree::ParsingOptions {
            allow_dtd: false,
            // Never reached before `max_nodes`: besides the document node, roxmltree adds at
            // most one text node per start tag, end tag, comment, PI or CDATA section (+1), so
            // it makes at most 3 * max_nodes + 2 nodes of a document that passed the scan.
            nodes_limit: u32::try_from(self.max_nodes.saturating_mul(3).saturating_add(2))
                .unwrap_or(u32::MAX),
        };
        Document::parse_with_options(text, options).map_err(|err| match err {
            roxmltree::Error::NodesLimitReached => XmlError::Limit(LimitError {
                limit: Limit::Nodes,
                max: self.max_nodes,
                line: None,
            }),
            other => {
                let pos = other.pos();
                XmlError::Malformed {
                    line: pos.row,
                    column: pos.col,
                    message: other.to_string(),
                }
            }
        })
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

/// Parses `text` under [`Limits::DEFAULT`].
pub fn parse(text: &str) -> Result<Document<'_>, XmlError> {
    Limits::DEFAULT.parse(text)
}

/// Which of the [`Limits`] a document broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Size,
    Depth,
    Attributes,
    Nodes,
    Namespaces,
}

/// A document broke one of the [`Limits`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", describe(self))]
pub struct LimitError {
    pub limit: Limit,
    /// The limit's value.
    pub max: usize,
    /// The line where the document went over it (none for the size limit).
    pub line: Option<u32>,
}

fn describe(err: &LimitError) -> String {
    let at = err
        .line
        .map(|l| format!(" at line {l}"))
        .unwrap_or_default();
    let max = err.max;
    match err.limit {
        Limit::Size => format!("XML size limit exceeded: the document is larger than {max} bytes"),
        Limit::Depth => format!(
            "XML nesting depth limit exceeded{at}: elements nest more than {max} levels deep"
        ),
        Limit::Attributes => {
            format!("XML attribute limit exceeded{at}: an element has more than {max} attributes")
        }
        Limit::Nodes => format!(
            "XML node limit exceeded{at}: more than {max} elements, comments, processing instructions and CDATA sections"
        ),
        Limit::Namespaces => format!(
            "XML namespace limit exceeded{at}: more than {max} namespace declarations"
        ),
    }
}

/// Why a document could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    #[error(transparent)]
    Limit(#[from] LimitError),
    /// Not well-formed XML (or a DTD, which is refused).
    #[error("malformed XML at line {line}, column {column}: {message}")]
    Malformed {
        line: u32,
        column: u32,
        message: String,
    },
}

/// The pre-parse pass: follows just enough XML syntax (comments, CDATA, processing instructions,
/// declarations, quoted attribute values) to count what the limits are about. Every byte is
/// looked at a bounded number of times.
struct Scan<'a> {
    b: &'a [u8],
    limits: &'a Limits,
    i: usize,
    line: u32,
    depth: usize,
    nodes: usize,
    namespaces: usize,
}

impl<'a> Scan<'a> {
    fn new(b: &'a [u8], limits: &'a Limits) -> Self {
        Scan {
            b,
            limits,
            i: 0,
            line: 1,
            depth: 0,
            nodes: 0,
            namespaces: 0,
        }
    }

    fn over(&self, limit: Limit, max: usize, line: u32) -> LimitError {
        LimitError {
            limit,
            max,
            line: Some(line),
        }
    }

    fn run(mut self) -> Result<(), LimitError> {
        while self.i < self.b.len() {
            match self.b[self.i] {
                b'<' => {}
                b'\n' => {
                    self.line += 1;
                    self.i += 1;
                    continue;
                }
                _ => {
                    self.i += 1;
                    continue;
                }
            }
            let rest = &self.b[self.i..];
            let line = self.line;
            if rest.starts_with(b"<!--") {
                self.node(line)?;
                self.skip_past(4, b"-->");
            } else if rest.starts_with(b"<![CDATA[") {
                self.node(line)?;
                self.skip_past(9, b"]]>");
            } else if rest.starts_with(b"<?") {
                self.node(line)?;
                self.skip_past(2, b"?>");
            } else if rest.starts_with(b"</") {
                self.depth = self.depth.saturating_sub(1);
                self.skip_past(2, b">");
            } else if rest.starts_with(b"<!") {
                // A DOCTYPE; the parser refuses it.
                self.skip_past(2, b">");
            } else {
                self.node(line)?;
                self.start_tag(line)?;
            }
        }
        Ok(())
    }

    fn node(&mut self, line: u32) -> Result<(), LimitError> {
        self.nodes += 1;
        if self.nodes > self.limits.max_nodes {
            return Err(self.over(Limit::Nodes, self.limits.max_nodes, line));
        }
        Ok(())
    }

    /// Moves past the first `end` after `self.i + skip`, counting lines (to the end of the text
    /// if there is none).
    fn skip_past(&mut self, skip: usize, end: &[u8]) {
        let mut j = self.i + skip;
        while j < self.b.len() {
            if self.b[j..].starts_with(end) {
                self.i = j + end.len();
                return;
            }
            if self.b[j] == b'\n' {
                self.line += 1;
            }
            j += 1;
        }
        self.i = j;
    }

    /// A start tag at `self.i` (on '<'): counts its attributes (one '=' outside quoted values
    /// each) and namespace declarations, and its nesting level unless it is empty (`/>`).
    fn start_tag(&mut self, line: u32) -> Result<(), LimitError> {
        let b = self.b;
        let mut j = self.i + 1;
        let mut quote = None;
        let mut attributes = 0usize;
        // The last word outside quoted values: an attribute's name when '=' follows it.
        let mut word: Option<usize> = None;
        let mut last_word: Option<(usize, usize)> = None;
        let mut self_closing = false;
        while j < b.len() {
            let c = b[j];
            if c == b'\n' {
                self.line += 1;
            }
            match quote {
                Some(q) => {
                    if c == q {
                        quote = None;
                    }
                }
                None => match c {
                    b'>' => {
                        self_closing = b[j - 1] == b'/';
                        break;
                    }
                    b'"' | b'\'' => {
                        quote = Some(c);
                        word = None;
                        last_word = None;
                    }
                    b'=' => {
                        attributes += 1;
                        if attributes > self.limits.max_attributes {
                            return Err(self.over(
                                Limit::Attributes,
                                self.limits.max_attributes,
                                line,
                            ));
                        }
                        let name = match word {
                            Some(start) => Some((start, j)),
                            None => last_word,
                        };
                        if let Some((start, end)) = name {
                            let name = &b[start..end];
                            if name == b"xmlns" || name.starts_with(b"xmlns:") {
                                self.namespaces += 1;
                                if self.namespaces > self.limits.max_namespaces {
                                    return Err(self.over(
                                        Limit::Namespaces,
                                        self.limits.max_namespaces,
                                        self.line,
                                    ));
                                }
                            }
                        }
                        word = None;
                        last_word = None;
                    }
                    b' ' | b'\t' | b'\r' | b'\n' => {
                        if let Some(start) = word.take() {
                            last_word = Some((start, j));
                        }
                    }
                    _ => {
                        if word.is_none() {
                            word = Some(j);
                        }
                    }
                },
            }
            j += 1;
        }
        self.i = j + 1;
        if !self_closing {
            self.depth += 1;
            if self.depth > self.limits.max_depth {
                return Err(self.over(Limit::Depth, self.limits.max_depth, line));
            }
        }
        Ok(())
    }
}

/// Escapes `text` for element content: `&`, `<`, `>`, both quotes, and carriage returns (which
/// a parser would otherwise turn into line feeds). Tabs and line feeds stay as they are.
pub fn escape_text(text: &str) -> Cow<'_, str> {
    escape(text, false)
}

/// Escapes `value` for an attribute value in single or double quotes: as [`escape_text`], plus
/// tabs and line feeds, which attribute-value normalization would otherwise turn into spaces.
pub fn escape_attr(value: &str) -> Cow<'_, str> {
    escape(value, true)
}

fn escape(text: &str, attribute: bool) -> Cow<'_, str> {
    let replacement = |c: char| -> Option<&'static str> {
        Some(match c {
            '&' => "&amp;",
            '<' => "&lt;",
            '>' => "&gt;",
            '\'' => "&apos;",
            '"' => "&quot;",
            '\r' => "&#13;",
            '\t' if attribute => "&#9;",
            '\n' if attribute => "&#10;",
            _ => return None,
        })
    };
    let Some(first) = text.find(|c| replacement(c).is_some()) else {
        return Cow::Borrowed(text);
    };
    let mut out = String::with_capacity(text.len() + 16);
    out.push_str(&text[..first]);
    for c in text[first..].chars() {
        match replacement(c) {
            Some(r) => out.push_str(r),
            None => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit_of(text: &str, limits: &Limits) -> Option<(Limit, usize, Option<u32>)> {
        match limits.parse(text) {
            Err(XmlError::Limit(e)) => Some((e.limit, e.max, e.line)),
            _ => None,
        }
    }

    fn nested(depth: usize) -> String {
        "<a>".repeat(depth) + &"</a>".repeat(depth)
    }

    fn with_attributes(count: usize) -> String {
        let mut text = String::from("<a");
        for n in 0..count {
            text.push_str(&format!(" a{n}='{n}'"));
        }
        text.push_str("/>");
        text
    }

    #[test]
    fn size_limit() {
        let max = Limits::DEFAULT.max_bytes;
        let padding = max - "<a></a>".len();
        let at = format!("<a>{}</a>", " ".repeat(padding));
        assert_eq!(at.len(), max);
        assert!(parse(&at).is_ok());
        let over = format!("<a>{} </a>", " ".repeat(padding));
        assert_eq!(
            limit_of(&over, &Limits::DEFAULT),
            Some((Limit::Size, 4 << 20, None))
        );
    }

    #[test]
    fn depth_limit() {
        assert!(parse(&nested(64)).is_ok());
        assert_eq!(
            limit_of(&nested(65), &Limits::DEFAULT),
            Some((Limit::Depth, 64, Some(1)))
        );
        // Nesting far beyond what would overflow roxmltree's recursion is refused, not parsed.
        let deep = nested(200_000);
        assert_eq!(
            limit_of(&deep, &Limits::DEFAULT).map(|l| l.0),
            Some(Limit::Depth)
        );
        // The line is where the level too many opens.
        let text = "<a>\n".repeat(65);
        assert_eq!(
            limit_of(&text, &Limits::DEFAULT),
            Some((Limit::Depth, 64, Some(65)))
        );
    }

    #[test]
    fn attribute_limit() {
        assert!(parse(&with_attributes(64)).is_ok());
        assert_eq!(
            limit_of(&with_attributes(65), &Limits::DEFAULT),
            Some((Limit::Attributes, 64, Some(1)))
        );
        // The probe's element: parsing it would cost 50,000² / 2 comparisons.
        let text = format!("<pool>\n{}</pool>", with_attributes(50_000));
        assert_eq!(
            limit_of(&text, &Limits::DEFAULT),
            Some((Limit::Attributes, 64, Some(2)))
        );
        // Spaces around '=' and '>' or '=' inside values do not confuse the count.
        let spaced = "<a x = '1' y\n=\"a=b>c\" z='='/>";
        let three = Limits {
            max_attributes: 3,
            ..Limits::DEFAULT
        };
        assert!(three.parse(spaced).is_ok());
        let two = Limits {
            max_attributes: 2,
            ..Limits::DEFAULT
        };
        assert_eq!(limit_of(spaced, &two).map(|l| l.0), Some(Limit::Attributes));
    }

    #[test]
    fn node_limit() {
        let max = Limits::DEFAULT.max_nodes;
        let at = format!("<a>{}</a>", "<b/>".repeat(max - 1));
        assert!(parse(&at).is_ok());
        let over = format!("<a>{}</a>", "<b/>".repeat(max));
        assert_eq!(
            limit_of(&over, &Limits::DEFAULT),
            Some((Limit::Nodes, max, Some(1)))
        );
        // Comments, processing instructions and CDATA count; text between them does not, yet
        // roxmltree's own node limit (text included) is never reached first.
        let small = Limits {
            max_nodes: 4,
            ..Limits::DEFAULT
        };
        let text = "<a>x<!--c-->y<?p?>z<![CDATA[w]]>v</a>";
        assert!(small.parse(text).is_ok());
        let text = "<a>x<!--c-->y<?p?>z<![CDATA[w]]>v<b/></a>";
        assert_eq!(limit_of(text, &small).map(|l| l.0), Some(Limit::Nodes));
        let text = format!("<a>{}</a>", "t<b>t</b>".repeat(3));
        assert!(small.parse(&text).is_ok());
    }

    #[test]
    fn namespace_limit() {
        let declarations =
            |count: usize| format!("<a>{}</a>", "<b xmlns:x='urn:x'/>".repeat(count));
        assert!(parse(&declarations(64)).is_ok());
        assert_eq!(
            limit_of(&declarations(65), &Limits::DEFAULT),
            Some((Limit::Namespaces, 64, Some(1)))
        );
        // Default namespaces count too.
        let defaults = format!("<a>{}</a>", "<b xmlns='urn:x'/>".repeat(65));
        assert_eq!(
            limit_of(&defaults, &Limits::DEFAULT).map(|l| l.0),
            Some(Limit::Namespaces)
        );
        // An attribute merely named like a prefix is not a declaration.
        assert!(parse(&format!("<a>{}</a>", "<b xmlnsx='1'/>".repeat(100))).is_ok());
    }

    #[test]
    fn the_scan_skips_what_is_not_markup() {
        let one = Limits {
            max_depth: 1,
            max_attributes: 1,
            ..Limits::DEFAULT
        };
        for text in [
            "<a><!-- <b><c x='1' y='2'> --></a>",
            "<a><![CDATA[<b><c>]]></a>",
            "<a><?p <b><c> ?></a>",
            "<a x='<b>'/>",
            "<a x=\"'>'\"></a>",
            "<a/>",
        ] {
            assert!(one.check(text).is_ok(), "{text}");
        }
        assert_eq!(
            one.check("<a><b></b></a>").map_err(|e| e.limit),
            Err(Limit::Depth)
        );
        // Unterminated constructs end the scan; the parser reports them.
        for text in ["<", "<a", "<!--", "<a x='", ""] {
            assert!(one.check(text).is_ok(), "{text}");
        }
        assert!(matches!(
            parse("<a><b></a>"),
            Err(XmlError::Malformed { line: 1, .. })
        ));
    }

    #[test]
    fn dtds_are_refused() {
        let text = "<!DOCTYPE a [<!ENTITY x 'y'>]><a>&x;</a>";
        assert!(matches!(parse(text), Err(XmlError::Malformed { .. })));
    }

    #[test]
    fn messages_name_the_limit_its_value_and_the_line() {
        let err = parse(&nested(65)).unwrap_err().to_string();
        assert_eq!(
            err,
            "XML nesting depth limit exceeded at line 1: elements nest more than 64 levels deep"
        );
        let err = parse(&with_attributes(65)).unwrap_err().to_string();
        assert_eq!(
            err,
            "XML attribute limit exceeded at line 1: an element has more than 64 attributes"
        );
    }

    #[test]
    fn escaping() {
        assert_eq!(escape_text("plain"), Cow::Borrowed("plain"));
        assert_eq!(
            escape_text("a'<b>&\"c\r\n\td"),
            "a&apos;&lt;b&gt;&amp;&quot;c&#13;\n\td"
        );
        assert_eq!(escape_attr("a\tb\nc\rd'"), "a&#9;b&#10;c&#13;d&apos;");
        // What is escaped reads back as it was, in text and in attribute values.
        let nasty = "x & y <z> 'q' \"w\"\r\n\tend";
        let doc = format!("<a v='{}'>{}</a>", escape_attr(nasty), escape_text(nasty));
        let parsed = parse(&doc).unwrap();
        let root = parsed.root_element();
        assert_eq!(root.attribute("v"), Some(nasty));
        assert_eq!(root.text(), Some(nasty));
    }
}
