//! The QR code of a subscribe link, as SVG: encoded by the qrcode crate,
//! drawn here as one path of horizontal runs (the crate's own SVG renderer
//! writes one square per module, ten times the text and the time).

use std::fmt::Write as _;

use qrcode::{Color, EcLevel, QrCode};

/// The quiet zone around the code, in modules (ISO/IEC 18004 asks for 4).
const QUIET: usize = 4;
/// Pixels per module in the SVG's nominal size.
const SCALE: usize = 4;

/// An SVG QR code of `text`; empty when the text is too long for a QR code.
pub fn svg(text: &str) -> String {
    let Ok(code) = QrCode::with_error_correction_level(text.as_bytes(), EcLevel::M) else {
        return String::new();
    };
    let width = code.width();
    let colors = code.to_colors();
    let size = width + 2 * QUIET;
    let mut path = String::with_capacity(width * width);
    for (y, row) in colors.chunks(width).enumerate() {
        let mut x = 0;
        while x < width {
            if row[x] == Color::Light {
                x += 1;
                continue;
            }
            let start = x;
            while x < width && row[x] == Color::Dark {
                x += 1;
            }
            let _ = write!(
                path,
                "M{} {}h{}v1h-{}z",
                start + QUIET,
                y + QUIET,
                x - start,
                x - start
            );
        }
    }
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{px}\" height=\"{px}\" viewBox=\"0 0 {size} {size}\" shape-rendering=\"crispEdges\"><rect width=\"{size}\" height=\"{size}\" fill=\"#fff\"/><path fill=\"#000\" d=\"{path}\"/></svg>",
        px = size * SCALE
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subscribe_uri_becomes_an_svg_of_its_modules() {
        let uri = "xmpp:certwatch.example.org?pubsub;action=subscribe;node=a.example";
        let s = svg(uri);
        assert!(s.starts_with("<svg") && s.ends_with("</svg>"), "{s}");
        assert!(!s.contains("example"), "the text is not in the image: {s}");
        // Every dark module is drawn once: the runs add up to the count.
        let code = QrCode::with_error_correction_level(uri.as_bytes(), EcLevel::M).unwrap();
        let dark = code
            .to_colors()
            .iter()
            .filter(|c| **c == Color::Dark)
            .count();
        let d = s.split("d=\"").nth(1).unwrap();
        let runs: usize = d
            .split('h')
            .skip(1)
            .step_by(2)
            .map(|r| r.split('v').next().unwrap().parse::<usize>().unwrap())
            .sum();
        assert_eq!(runs, dark);
        assert_eq!(svg(&"x".repeat(10_000)), "");
    }
}
