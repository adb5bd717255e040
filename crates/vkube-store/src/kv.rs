//! The values the store hands out: keys with their revisions, list pages and watch events.

/// A store revision. Every successful write raises the global revision by exactly one.
pub type Revision = i64;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    /// The revision of the write that created this incarnation of the key.
    pub create_revision: Revision,
    /// The revision of the last write to the key.
    pub mod_revision: Revision,
    /// Writes since creation, starting at 1; a re-created key starts again at 1.
    pub version: i64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListOptions {
    /// Read at this revision; `None` reads at the current revision.
    pub revision: Option<Revision>,
    /// At most this many items; `None` for all.
    pub limit: Option<usize>,
    /// Only keys strictly greater than this one (the last key of the previous page).
    pub start_after: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListResult {
    pub items: Vec<KeyValue>,
    /// The revision the list was read at; pass it back to read the next page consistently.
    pub revision: Revision,
    /// Whether keys remain after the last item.
    pub more: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Create,
    Update,
    Delete,
}

/// One write, as a watcher sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    /// The revision of the write.
    pub revision: Revision,
    pub key: String,
    /// The value after the write; `None` for a delete.
    pub value: Option<KeyValue>,
    /// The value before the write; `None` for a create.
    pub prev: Option<KeyValue>,
}

/// The first string after every string that starts with `prefix`, in code-point (= UTF-8 byte)
/// order; `None` when no such bound exists. SQL backends scan `[prefix, end)` with it.
pub(crate) fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = match last as u32 + 1 {
            0xD800 => Some('\u{E000}'),
            n => char::from_u32(n),
        };
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_end_bounds_every_key_with_the_prefix() {
        assert_eq!(
            prefix_end("/registry/pods/").as_deref(),
            Some("/registry/pods0")
        );
        assert_eq!(prefix_end("a\u{D7FF}").as_deref(), Some("a\u{E000}"));
        assert_eq!(prefix_end("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_end(""), None);
        assert_eq!(prefix_end("\u{10FFFF}"), None);
    }
}
