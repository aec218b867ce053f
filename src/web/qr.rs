//! The QR code of a subscribe link, as inline SVG (the qrcode crate).

use qrcode::render::svg;
use qrcode::{EcLevel, QrCode};

/// An SVG QR code of `text`, without the XML declaration (it sits inside
/// HTML); empty when the text is too long for a QR code.
pub fn svg(text: &str) -> String {
    let Ok(code) = QrCode::with_error_correction_level(text.as_bytes(), EcLevel::M) else {
        return String::new();
    };
    let image = code
        .render::<svg::Color<'_>>()
        .min_dimensions(160, 160)
        .dark_color(svg::Color("#000000"))
        .light_color(svg::Color("#ffffff"))
        .build();
    match image.find("<svg") {
        Some(start) => image[start..].to_owned(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_subscribe_uri_becomes_an_svg_without_markup_of_its_own() {
        let s = super::svg("xmpp:certwatch.example.org?pubsub;action=subscribe;node=a.example");
        assert!(
            s.starts_with("<svg") && s.trim_end().ends_with("</svg>"),
            "{s}"
        );
        assert!(!s.contains("<script") && !s.contains("example"), "{s}");
        assert_eq!(super::svg(&"x".repeat(10_000)), "");
    }
}
