import Foundation

/// Pillow's `Image.resize` of an 8-bit RGB image, reproduced bit for bit (Pillow 10 to 13,
/// src/libImaging/Resample.c and Geometry.c), because edgekit's preprocessing is defined by it:
/// the model was verified on tensors Pillow made, and a bilinear filter written from a textbook
/// differs from Pillow's by a grey level here and there.
///
/// Pillow resamples in two separable passes, horizontal first (only over the rows the vertical
/// pass will read), then vertical, each in 8-bit fixed point: per output pixel it computes
/// filter weights in double, normalizes them to sum 1, converts them to integers scaled by
/// 2^22, accumulates pixel * weight in 32-bit integers starting from 2^21 (rounding), shifts
/// right by 22 and clamps to 0...255. The intermediate image is 8-bit too. NEAREST is not a
/// convolution in Pillow but an affine scale: source x = trunc(a * 0.5 + a * i) accumulated by
/// repeated addition of a = in / out, in double.
///
/// Not reproduced: images taller than 100 times their width, which Pillow resizes in two steps
/// (no photo is that shape), and the `box` and `reducing_gap` arguments, which edgekit never
/// passes.
public enum Resample {
    /// Pillow's filters by the names edgekit's manifest uses (its Interpolation enum).
    public enum Filter: String, Codable, CaseIterable, Sendable {
        case nearest, bilinear, bicubic, lanczos, box, hamming

        /// Half-width of the filter kernel at scale 1, in input pixels.
        var support: Double {
            switch self {
            case .nearest, .box: return 0.5
            case .bilinear, .hamming: return 1.0
            case .bicubic: return 2.0
            case .lanczos: return 3.0
            }
        }

        func weight(_ x: Double) -> Double {
            switch self {
            case .nearest, .box:
                return x > -0.5 && x <= 0.5 ? 1.0 : 0.0
            case .bilinear:
                let ax = abs(x)
                return ax < 1.0 ? 1.0 - ax : 0.0
            case .hamming:
                let ax = abs(x)
                if ax == 0.0 { return 1.0 }
                if ax >= 1.0 { return 0.0 }
                let px = ax * Double.pi
                // Pillow writes the constants as C floats (0.54f, 0.46f), promoted to double.
                return sin(px) / px * (Double(Float(0.54)) + Double(Float(0.46)) * cos(px))
            case .bicubic:
                let a = -0.5
                let ax = abs(x)
                if ax < 1.0 { return ((a + 2.0) * ax - (a + 3.0)) * ax * ax + 1 }
                if ax < 2.0 { return (((ax - 5) * ax + 8) * ax - 4) * a }
                return 0.0
            case .lanczos:
                return -3.0 <= x && x < 3.0 ? sinc(x) * sinc(x / 3) : 0.0
            }
        }

        private func sinc(_ x: Double) -> Double {
            if x == 0.0 { return 1.0 }
            let px = x * Double.pi
            return sin(px) / px
        }
    }

    /// 32 - 8 - 2: 8 bits of result, 2 bits of headroom for kernels with negative lobes.
    static let precisionBits = 22

    /// Resize interleaved RGB8 pixels (height x width x 3) to newHeight x newWidth.
    public static func resize(
        rgb: [UInt8], height: Int, width: Int, newHeight: Int, newWidth: Int, filter: Filter
    ) -> [UInt8] {
        precondition(rgb.count == height * width * 3, "rgb holds \(rgb.count) bytes, not HxWx3")
        if newHeight == height && newWidth == width { return rgb }  // Pillow returns a copy
        if filter == .nearest {
            return nearest(rgb: rgb, height: height, width: width, newHeight: newHeight,
                           newWidth: newWidth)
        }
        let vertical = coefficients(inSize: height, outSize: newHeight, filter: filter)
        var pixels = rgb
        var rows = height
        var firstRow = 0
        if newWidth != width {
            // Only the rows the vertical pass reads are resampled horizontally.
            firstRow = vertical.bounds[0].start
            let last = vertical.bounds[newHeight - 1]
            let lastRow = last.start + last.count
            let horizontal = coefficients(inSize: width, outSize: newWidth, filter: filter)
            pixels = resampleHorizontal(
                rgb: rgb, width: width, rows: firstRow..<lastRow, newWidth: newWidth,
                coefficients: horizontal
            )
            rows = lastRow - firstRow
        }
        guard newHeight != height else { return pixels }
        let currentWidth = newWidth
        return resampleVertical(
            rgb: pixels, width: currentWidth, rows: rows, rowOffset: firstRow,
            newHeight: newHeight, coefficients: vertical
        )
    }

    struct Coefficients {
        /// Per output pixel: the first input pixel it reads and how many.
        var bounds: [(start: Int, count: Int)]
        /// Per output pixel, `kernelSize` fixed-point weights (zero past `count`).
        var weights: [Int32]
        var kernelSize: Int
    }

    /// Pillow's precompute_coeffs + normalize_coeffs_8bpc for a full-image box.
    static func coefficients(inSize: Int, outSize: Int, filter: Filter) -> Coefficients {
        let scale = Double(inSize) / Double(outSize)
        let filterScale = max(scale, 1.0)
        let support = filter.support * filterScale
        let kernelSize = Int(support.rounded(.up)) * 2 + 1
        var bounds: [(start: Int, count: Int)] = []
        bounds.reserveCapacity(outSize)
        var weights = [Int32](repeating: 0, count: outSize * kernelSize)
        let inverseScale = 1.0 / filterScale
        var kernel = [Double](repeating: 0, count: kernelSize)
        for outIndex in 0..<outSize {
            let center = (Double(outIndex) + 0.5) * scale
            // C's (int) cast truncates toward zero, as Int(_:) does.
            let start = max(Int(center - support + 0.5), 0)
            let end = min(Int(center + support + 0.5), inSize)
            let count = end - start
            var total = 0.0
            for k in 0..<count {
                let w = filter.weight((Double(k + start) - center + 0.5) * inverseScale)
                kernel[k] = w
                total += w
            }
            for k in 0..<count {
                let normalized = total != 0.0 ? kernel[k] / total : kernel[k]
                let scaled = normalized * Double(1 << precisionBits)
                weights[outIndex * kernelSize + k] = Int32(normalized < 0 ? scaled - 0.5 : scaled + 0.5)
            }
            bounds.append((start, count))
        }
        return Coefficients(bounds: bounds, weights: weights, kernelSize: kernelSize)
    }

    @inline(__always)
    static func clip8(_ accumulator: Int) -> UInt8 {
        let value = accumulator >> precisionBits  // arithmetic shift, as in C for int
        return UInt8(min(max(value, 0), 255))
    }

    static func resampleHorizontal(
        rgb: [UInt8], width: Int, rows: Range<Int>, newWidth: Int, coefficients: Coefficients
    ) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: rows.count * newWidth * 3)
        let rounding = 1 << (precisionBits - 1)
        for (outRow, row) in rows.enumerated() {
            let rowBase = row * width * 3
            for x in 0..<newWidth {
                let (start, count) = coefficients.bounds[x]
                let weightBase = x * coefficients.kernelSize
                var r = rounding, g = rounding, b = rounding
                for k in 0..<count {
                    let w = Int(coefficients.weights[weightBase + k])
                    let pixel = rowBase + (start + k) * 3
                    r += Int(rgb[pixel]) * w
                    g += Int(rgb[pixel + 1]) * w
                    b += Int(rgb[pixel + 2]) * w
                }
                let target = (outRow * newWidth + x) * 3
                out[target] = clip8(r)
                out[target + 1] = clip8(g)
                out[target + 2] = clip8(b)
            }
        }
        return out
    }

    /// `rgb` holds rows [rowOffset, rowOffset + rows) of the image the bounds refer to.
    static func resampleVertical(
        rgb: [UInt8], width: Int, rows: Int, rowOffset: Int, newHeight: Int,
        coefficients: Coefficients
    ) -> [UInt8] {
        precondition(rgb.count == rows * width * 3)
        var out = [UInt8](repeating: 0, count: newHeight * width * 3)
        let rounding = 1 << (precisionBits - 1)
        for y in 0..<newHeight {
            let (start, count) = coefficients.bounds[y]
            let weightBase = y * coefficients.kernelSize
            for x in 0..<width {
                var r = rounding, g = rounding, b = rounding
                for k in 0..<count {
                    let w = Int(coefficients.weights[weightBase + k])
                    let pixel = ((start - rowOffset + k) * width + x) * 3
                    r += Int(rgb[pixel]) * w
                    g += Int(rgb[pixel + 1]) * w
                    b += Int(rgb[pixel + 2]) * w
                }
                let target = (y * width + x) * 3
                out[target] = clip8(r)
                out[target + 1] = clip8(g)
                out[target + 2] = clip8(b)
            }
        }
        return out
    }

    /// Pillow's NEAREST resize: ImagingScaleAffine, source coordinates accumulated in double.
    static func nearest(
        rgb: [UInt8], height: Int, width: Int, newHeight: Int, newWidth: Int
    ) -> [UInt8] {
        let xStep = Double(width) / Double(newWidth)
        let yStep = Double(height) / Double(newHeight)
        var sourceX = [Int](repeating: 0, count: newWidth)
        var xo = xStep * 0.5
        for x in 0..<newWidth {
            sourceX[x] = min(xo < 0 ? 0 : Int(xo), width - 1)
            xo += xStep
        }
        var out = [UInt8](repeating: 0, count: newHeight * newWidth * 3)
        var yo = yStep * 0.5
        for y in 0..<newHeight {
            let sourceY = min(yo < 0 ? 0 : Int(yo), height - 1)
            for x in 0..<newWidth {
                let source = (sourceY * width + sourceX[x]) * 3
                let target = (y * newWidth + x) * 3
                out[target] = rgb[source]
                out[target + 1] = rgb[source + 1]
                out[target + 2] = rgb[source + 2]
            }
            yo += yStep
        }
        return out
    }
}
