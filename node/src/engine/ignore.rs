//! Ignore rules: `.filesyncignore` at the root, in gitignore syntax.
//!
//! Patterns are relative to the root (a pattern with a `/` is anchored; one
//! without matches at any depth; a trailing `/` matches directories only; `!`
//! re-includes; `#` starts a comment). A path is ignored when it or any of
//! its parent directories matches (the last matching pattern wins, as in
//! git). Ignored paths are neither proposed nor materialized nor deleted: a
//! node keeps whatever it has there. The ignore file itself is an ordinary
//! synced file, so a cluster shares one set of rules. Lines that do not
//! parse are skipped with a warning.

use ignore::gitignore::{Gitignore, GitignoreBuilder};

/// Compiled ignore rules. Two are equal when compiled from the same text
/// (the engine plans every path again when its rules change).
#[derive(Clone, Debug)]
pub struct Ignore {
    rules: Gitignore,
    text: String,
}

impl PartialEq for Ignore {
    fn eq(&self, other: &Ignore) -> bool {
        self.text == other.text
    }
}

impl Eq for Ignore {}

impl Default for Ignore {
    fn default() -> Self {
        Ignore::none()
    }
}

impl Ignore {
    /// No rules: nothing is ignored.
    pub fn none() -> Ignore {
        Ignore {
            rules: Gitignore::empty(),
            text: String::new(),
        }
    }

    /// Compiles the text of an ignore file.
    pub fn parse(text: &str) -> Ignore {
        let mut b = GitignoreBuilder::new("");
        for line in text.lines() {
            if let Err(e) = b.add_line(None, line) {
                tracing::warn!(line, error = %e, "skipping an invalid ignore pattern");
            }
        }
        let rules = b.build().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "ignore rules do not compile; ignoring nothing");
            Gitignore::empty()
        });
        Ignore {
            rules,
            text: text.to_owned(),
        }
    }

    /// Whether the relative path `rel` (or a parent of it) is ignored.
    pub fn is_ignored(&self, rel: &str, is_dir: bool) -> bool {
        if rel.is_empty() || rel.starts_with('/') {
            return false;
        }
        self.rules
            .matched_path_or_any_parents(rel, is_dir)
            .is_ignore()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gitignore_semantics() {
        let ig = Ignore::parse("# comment\n*.tmp\n/build/\ncache/\n!keep.tmp\ndocs/*.pdf\n");
        let cases = [
            ("a.tmp", false, true),
            ("d/e/a.tmp", false, true),
            ("keep.tmp", false, false),
            ("build", true, true),
            ("build/x/y.c", false, true),
            ("src/build", true, false),
            ("build", false, false),
            ("x/cache/y", false, true),
            ("docs/a.pdf", false, true),
            ("docs/sub/a.pdf", false, false),
            ("a.txt", false, false),
        ];
        for (p, dir, want) in cases {
            assert_eq!(ig.is_ignored(p, dir), want, "{p} dir={dir}");
        }
        assert!(!Ignore::none().is_ignored("a.tmp", false));
        assert!(!ig.is_ignored("", true));
        assert_eq!(
            ig,
            Ignore::parse("# comment\n*.tmp\n/build/\ncache/\n!keep.tmp\ndocs/*.pdf\n")
        );
        assert_ne!(ig, Ignore::none());
        assert_eq!(Ignore::parse(""), Ignore::none());
    }
}
