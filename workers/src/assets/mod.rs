//! The static files every worker serves, compiled into the binary.

use std::sync::LazyLock;

/// The chat page at `GET /`: one self-contained file (HTML, CSS and JS inline).
pub const INDEX_HTML: &str = include_str!("index.html");

/// The tab icon.
pub const FAVICON_SVG: &str = include_str!("favicon.svg");

/// Entity tag of [`INDEX_HTML`], a hash of its bytes, so a browser revalidating after an
/// upgrade gets the new page and otherwise a 304.
pub fn index_etag() -> &'static str {
    static ETAG: LazyLock<String> = LazyLock::new(|| {
        // FNV-1a: tiny, stable across builds, plenty for change detection.
        let hash = INDEX_HTML.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        format!("\"{hash:016x}\"")
    });
    &ETAG
}
