//! Visible text: market names and outcome labels must show something, must not reorder what
//! surrounds them, and outcome labels must look different from each other.
//!
//! Three rules, applied wherever a name or label is accepted (create, PUT, PATCH):
//! - **Invisible characters** (whitespace, format characters of category Cf such as U+200B
//!   ZERO WIDTH SPACE or U+FEFF, and the other default-ignorable code points such as U+00AD
//!   SOFT HYPHEN, U+3164 HANGUL FILLER or variation selectors) are allowed inside text (a
//!   zero-width joiner builds emoji and Indic conjuncts) but do not count: a name needs
//!   [`NAME_MIN`](super::market::NAME_MIN) visible characters, a label one.
//! - **Bidirectional controls** (U+202A-U+202E, U+2066-U+2069, U+200E, U+200F, U+061C) are
//!   refused in names and labels: they make a label display as another (`NO` shown as `ON`)
//!   and spill into the text around it wherever it is shown.
//! - **Outcome labels** are compared after [`label_key`]: invisible characters removed,
//!   whitespace collapsed, case folded. There is no Unicode crate with NFKC in the dependency
//!   tree, so compatibility forms (full-width `ＹＥＳ`) are not folded; case folding here is
//!   `to_lowercase`, `to_uppercase`, `to_lowercase` (which maps `ß`, `ẞ` and `SS` together).

use super::Problems;

/// The bidirectional formatting characters refused in names and labels.
pub fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}')
}

/// True for characters that show nothing by themselves: whitespace, format characters (Cf)
/// and the other default-ignorable code points (Unicode 15).
pub fn is_invisible(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            '\u{00AD}'
                | '\u{034F}'
                | '\u{0600}'..='\u{0605}'
                | '\u{061C}'
                | '\u{06DD}'
                | '\u{070F}'
                | '\u{0890}'..='\u{0891}'
                | '\u{08E2}'
                | '\u{115F}'..='\u{1160}'
                | '\u{17B4}'..='\u{17B5}'
                | '\u{180B}'..='\u{180F}'
                | '\u{200B}'..='\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2060}'..='\u{206F}'
                | '\u{3164}'
                | '\u{FE00}'..='\u{FE0F}'
                | '\u{FEFF}'
                | '\u{FFA0}'
                | '\u{FFF0}'..='\u{FFFB}'
                | '\u{110BD}'
                | '\u{110CD}'
                | '\u{13430}'..='\u{1343F}'
                | '\u{1BCA0}'..='\u{1BCA3}'
                | '\u{1D173}'..='\u{1D17A}'
                | '\u{E0000}'..='\u{E0FFF}'
        )
}

/// How many characters of `text` are visible.
pub fn visible_len(text: &str) -> usize {
    text.chars().filter(|c| !is_invisible(*c)).count()
}

/// The form two outcome labels are compared in: invisible characters other than whitespace
/// removed, whitespace runs collapsed to one space and trimmed, case folded.
pub fn label_key(label: &str) -> String {
    let mut out = String::with_capacity(label.len());
    let mut space = false;
    for c in label.chars() {
        if c.is_whitespace() {
            space = !out.is_empty();
        } else if !is_invisible(c) {
            if space {
                out.push(' ');
                space = false;
            }
            out.push(c);
        }
    }
    out.to_lowercase().to_uppercase().to_lowercase()
}

impl Problems {
    /// Parses a name or label: as [`Problems::text`], and also refuses bidirectional controls
    /// and text with fewer than `min` visible characters.
    pub fn visible_text(&mut self, field: &str, raw: &str, min: usize, max: usize) -> String {
        let before = self.len();
        let value = self.text(field, raw, min, max);
        if self.len() > before {
            return value;
        }
        if value.chars().any(is_bidi_control) {
            self.add(
                field,
                "must not contain bidirectional control characters \
                 (U+202A-U+202E, U+2066-U+2069, U+200E, U+200F, U+061C)",
            );
        } else if visible_len(&value) < min {
            let what = if min == 1 {
                "a visible character".to_owned()
            } else {
                format!("at least {min} visible characters")
            };
            self.add(
                field,
                format!("must contain {what} (spaces and invisible characters do not count)"),
            );
        }
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invisible_characters_do_not_count_as_visible() {
        assert_eq!(
            visible_len("\u{200B}\u{200C}\u{200D}\u{2060}\u{FEFF}\u{00AD}"),
            0
        );
        assert_eq!(visible_len("\u{3164}\u{FE0F} \u{E0041}"), 0);
        assert_eq!(visible_len("a\u{200D}b"), 2);
        assert_eq!(visible_len("👨\u{200D}👩"), 2);
    }

    #[test]
    fn bidi_controls_are_recognised() {
        for c in [
            '\u{202A}', '\u{202E}', '\u{2066}', '\u{2069}', '\u{200E}', '\u{200F}', '\u{061C}',
        ] {
            assert!(is_bidi_control(c), "{c:?}");
        }
        assert!(!is_bidi_control('\u{200D}'));
        assert!(!is_bidi_control('a'));
    }

    #[test]
    fn label_keys_ignore_case_spacing_and_invisible_characters() {
        assert_eq!(label_key("Yes"), label_key("YES"));
        assert_eq!(label_key("Y\u{200B}ES"), label_key("yes"));
        assert_eq!(label_key("  New   York\u{00A0}City "), "new york city");
        assert_eq!(label_key("Straße"), label_key("STRASSE"));
        assert_eq!(label_key("\u{1E9E}"), label_key("ss"));
        assert_ne!(label_key("No"), label_key("On"));
        assert_eq!(label_key("\u{200B}"), "");
    }

    #[test]
    fn visible_text_refuses_invisible_only_and_bidi_text() {
        let mut p = Problems::default();
        p.visible_text("a", "\u{200B}\u{200B}\u{200B}\u{200B}", 3, 10);
        p.visible_text("b", "ab\u{200B}", 3, 10);
        p.visible_text("c", "x\u{202E}ON", 1, 10);
        p.visible_text("d", " ", 1, 10);
        assert_eq!(p.len(), 4);
        let mut ok = Problems::default();
        assert_eq!(
            ok.visible_text("e", " Will 👩\u{200D}💻 ship? ", 3, 50),
            "Will 👩\u{200D}💻 ship?"
        );
        assert_eq!(ok.len(), 0);
    }
}
