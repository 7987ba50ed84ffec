import CoreGraphics
import UIKit

/// A photo as EdgekitCore's Preprocessor takes it: upright, 8-bit RGB, no alpha, row-major.
/// UIKit applies the EXIF orientation when it draws (edgekit applies it with
/// ImageOps.exif_transpose). Photos have no alpha; an image with transparency is drawn over
/// black here, where Pillow's convert("RGB") keeps the colour under the alpha: the one input
/// whose tensor differs from edgekit's.
enum ImagePixels {
    static func rgb8(_ image: UIImage) -> (pixels: [UInt8], height: Int, width: Int)? {
        let format = UIGraphicsImageRendererFormat.default()
        format.scale = 1
        format.opaque = true
        let pointSize = CGSize(
            width: image.size.width * image.scale, height: image.size.height * image.scale
        )
        let upright = UIGraphicsImageRenderer(size: pointSize, format: format).image { _ in
            image.draw(in: CGRect(origin: .zero, size: pointSize))
        }
        guard let cgImage = upright.cgImage else { return nil }
        let width = cgImage.width, height = cgImage.height
        var rgba = [UInt8](repeating: 0, count: width * height * 4)
        let drawn = rgba.withUnsafeMutableBytes { buffer -> Bool in
            guard let context = CGContext(
                data: buffer.baseAddress, width: width, height: height, bitsPerComponent: 8,
                bytesPerRow: width * 4, space: CGColorSpace(name: CGColorSpace.sRGB)!,
                bitmapInfo: CGImageAlphaInfo.noneSkipLast.rawValue
            ) else { return false }
            context.draw(cgImage, in: CGRect(x: 0, y: 0, width: width, height: height))
            return true
        }
        guard drawn else { return nil }
        var rgb = [UInt8](repeating: 0, count: width * height * 3)
        for pixel in 0..<(width * height) {
            rgb[pixel * 3] = rgba[pixel * 4]
            rgb[pixel * 3 + 1] = rgba[pixel * 4 + 1]
            rgb[pixel * 3 + 2] = rgba[pixel * 4 + 2]
        }
        return (rgb, height, width)
    }

    /// Float pixels in [0, 1], (3, H, W) planes, as the VAE decoder's output becomes -> an image.
    static func image(planes: [Float], height: Int, width: Int) -> UIImage? {
        var rgba = [UInt8](repeating: 255, count: width * height * 4)
        let plane = height * width
        for pixel in 0..<plane {
            for channel in 0..<3 {
                let value = min(max(planes[channel * plane + pixel], 0), 1)
                rgba[pixel * 4 + channel] = UInt8((value * 255).rounded())
            }
        }
        guard let provider = CGDataProvider(data: Data(rgba) as CFData),
            let cgImage = CGImage(
                width: width, height: height, bitsPerComponent: 8, bitsPerPixel: 32,
                bytesPerRow: width * 4, space: CGColorSpace(name: CGColorSpace.sRGB)!,
                bitmapInfo: CGBitmapInfo(rawValue: CGImageAlphaInfo.noneSkipLast.rawValue),
                provider: provider, decode: nil, shouldInterpolate: false, intent: .defaultIntent
            )
        else { return nil }
        return UIImage(cgImage: cgImage)
    }
}
