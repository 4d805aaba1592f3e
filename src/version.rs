//! The one rule for a version number, wherever one is read: the JSON and MessagePack readers,
//! the fast path, the split form's `version` header, and `v<N>` directory names in `schemas/`
//! and `tests/samples/`. A leaf.

use crate::codec::shorten;
use crate::error::Malformation;

/// A version as an integer, from any codec: it must be from 1 to 4294967295.
pub(crate) fn from_integer(n: i128) -> Result<u32, Malformation> {
    let invalid = |what: String| Err(Malformation::InvalidVersion(what));
    match n {
        0 => invalid("0".to_owned()),
        n if n < 0 => invalid(format!("the negative number {n}")),
        n => u32::try_from(n).or_else(|_| invalid(n.to_string())),
    }
}

/// Parses a version written in decimal: ASCII digits only (no sign, no space, no leading
/// zero), from 1 to 4294967295. The split form's `version` header, a JSON number's text and
/// a `v<N>` directory's `N` are all read by this rule.
///
/// ```
/// use upcaster::envelope::parse_version;
/// assert_eq!(parse_version("12").ok(), Some(12));
/// for bad in ["0", "+1", "01", " 1", "1.0", "4294967296", ""] {
///     assert!(parse_version(bad).is_err(), "{bad}");
/// }
/// ```
pub fn parse_version(text: &str) -> Result<u32, Malformation> {
    let invalid = || Err(Malformation::InvalidVersion(format!("{:?}", shorten(text))));
    let digits = !text.is_empty() && text.bytes().all(|c| c.is_ascii_digit());
    if !digits || (text.len() > 1 && text.starts_with('0')) {
        return invalid();
    }
    match text.parse::<u64>() {
        Ok(n) => from_integer(i128::from(n)),
        Err(_) => invalid(),
    }
}

/// The version a `v<N>` directory or file stem names, by [`parse_version`]'s rule: `v12` is
/// 12; `v+1`, `v01` and `v0` are none.
///
/// ```
/// assert_eq!(upcaster::envelope::version_of_dir("v12"), Some(12));
/// assert_eq!(upcaster::envelope::version_of_dir("v+1"), None);
/// ```
pub fn version_of_dir(name: &str) -> Option<u32> {
    parse_version(name.strip_prefix('v')?).ok()
}
