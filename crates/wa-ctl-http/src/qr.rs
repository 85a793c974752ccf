//! The QR code waiting to be scanned, as an image: SVG by default, PNG for
//! a client that asks for it. Both have the quiet zone a scanner needs,
//! dark on white whatever the page around them.

use qrcode::QrCode;
use qrcode::render::svg;

/// Pixels per module in the PNG.
const PNG_SCALE: usize = 8;

/// Modules of white around the code (the standard asks for four).
const QUIET: usize = 4;

/// The code as an SVG document.
pub(crate) fn svg(payload: &str) -> Result<String, qrcode::types::QrError> {
    let code = QrCode::new(payload.as_bytes())?;
    Ok(code
        .render::<svg::Color<'_>>()
        .min_dimensions(256, 256)
        .dark_color(svg::Color("#000000"))
        .light_color(svg::Color("#ffffff"))
        .quiet_zone(true)
        .build())
}

/// The code as a PNG (8-bit grey).
pub(crate) fn png(payload: &str) -> Result<Vec<u8>, String> {
    let code = QrCode::new(payload.as_bytes()).map_err(|e| e.to_string())?;
    let width = code.width();
    let colors = code.to_colors();
    let side = (width + 2 * QUIET) * PNG_SCALE;
    let mut pixels = vec![255u8; side * side];
    for (i, color) in colors.iter().enumerate() {
        if *color != qrcode::Color::Dark {
            continue;
        }
        let (x, y) = (i % width + QUIET, i / width + QUIET);
        for row in y * PNG_SCALE..(y + 1) * PNG_SCALE {
            pixels[row * side + x * PNG_SCALE..row * side + (x + 1) * PNG_SCALE].fill(0);
        }
    }
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, side as u32, side as u32);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(|e| e.to_string())?;
    writer
        .write_image_data(&pixels)
        .map_err(|e| e.to_string())?;
    writer.finish().map_err(|e| e.to_string())?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_forms_render() {
        let s = svg("2@abc,def,ghi").unwrap();
        assert!(s.contains("<svg") && s.contains("#ffffff"));
        let p = png("2@abc,def,ghi").unwrap();
        assert_eq!(&p[1..4], b"PNG");
    }
}
