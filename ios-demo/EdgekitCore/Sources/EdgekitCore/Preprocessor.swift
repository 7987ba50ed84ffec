import Foundation

/// The manifest's `preprocessing` block: how a photo becomes the model's input tensor.
public struct Preprocessing: Decodable, Equatable {
    public enum ResizeRule: String, Decodable, Sendable {
        case shortestEdge = "shortest-edge", exact, none
    }

    public enum CropRule: String, Decodable, Sendable { case center, none }
    public enum ChannelOrder: String, Decodable, Sendable { case rgb = "RGB", bgr = "BGR" }
    public enum Layout: String, Decodable, Sendable { case nchw = "NCHW", nhwc = "NHWC" }

    public let resize: ResizeRule
    public let resizeShortestEdge: Int?
    public let resizeHeight: Int?
    public let resizeWidth: Int?
    public let interpolation: Resample.Filter
    public let crop: CropRule
    public let cropHeight: Int?
    public let cropWidth: Int?
    public let rescaleFactor: Double
    /// Per channel, RGB order.
    public let mean: [Double]
    public let std: [Double]
    public let channelOrder: ChannelOrder
    public let layout: Layout

    enum CodingKeys: String, CodingKey {
        case resize, resizeShortestEdge = "resize_shortest_edge"
        case resizeHeight = "resize_height", resizeWidth = "resize_width", interpolation
        case crop, cropHeight = "crop_height", cropWidth = "crop_width"
        case rescaleFactor = "rescale_factor", mean, std
        case channelOrder = "channel_order", layout
    }

    public init(from decoder: Decoder) throws {
        let values = try decoder.container(keyedBy: CodingKeys.self)
        resize = try values.decode(ResizeRule.self, forKey: .resize)
        resizeShortestEdge = try values.decodeIfPresent(Int.self, forKey: .resizeShortestEdge)
        resizeHeight = try values.decodeIfPresent(Int.self, forKey: .resizeHeight)
        resizeWidth = try values.decodeIfPresent(Int.self, forKey: .resizeWidth)
        interpolation = try values.decode(Resample.Filter.self, forKey: .interpolation)
        crop = try values.decode(CropRule.self, forKey: .crop)
        cropHeight = try values.decodeIfPresent(Int.self, forKey: .cropHeight)
        cropWidth = try values.decodeIfPresent(Int.self, forKey: .cropWidth)
        rescaleFactor = try values.decode(Double.self, forKey: .rescaleFactor)
        mean = try values.decode([Double].self, forKey: .mean)
        std = try values.decode([Double].self, forKey: .std)
        channelOrder = try values.decode(ChannelOrder.self, forKey: .channelOrder)
        // The manifest always writes it; edgekit's default is NCHW.
        layout = try values.decodeIfPresent(Layout.self, forKey: .layout) ?? .nchw
        try checkSizesMatchRules(in: values)
    }

    /// The same checks as edgekit's Preprocessing model: a rule's sizes are present.
    private func checkSizesMatchRules(in values: KeyedDecodingContainer<CodingKeys>) throws {
        func fail(_ problem: String) -> DecodingError {
            .dataCorruptedError(forKey: .resize, in: values, debugDescription: problem)
        }
        if resize == .shortestEdge && resizeShortestEdge == nil {
            throw fail("resize 'shortest-edge' needs resize_shortest_edge")
        }
        if resize == .exact && (resizeHeight == nil || resizeWidth == nil) {
            throw fail("resize 'exact' needs resize_height and resize_width")
        }
        if crop == .center && (cropHeight == nil || cropWidth == nil) {
            throw fail("crop 'center' needs crop_height and crop_width")
        }
        if crop == .none && resize != .exact {
            throw fail("crop 'none' needs resize 'exact', so every photo gets one size")
        }
        if mean.count != 3 || std.count != 3 || std.contains(0) {
            throw fail("mean and std need 3 values each, std without 0")
        }
    }

    /// (height, width) of every preprocessed image.
    public var outputSize: (height: Int, width: Int) {
        crop == .center ? (cropHeight!, cropWidth!) : (resizeHeight!, resizeWidth!)
    }

    /// (height, width) after the resize rule, with Hugging Face's integer arithmetic: the
    /// longer side is truncated, int(size * long / short), not rounded.
    public func resizedSize(height: Int, width: Int) -> (height: Int, width: Int) {
        switch resize {
        case .exact:
            return (resizeHeight!, resizeWidth!)
        case .none:
            return (height, width)
        case .shortestEdge:
            let size = resizeShortestEdge!
            let (short, long) = width <= height ? (width, height) : (height, width)
            let newLong = Int(Double(size) * Double(long) / Double(short))
            return width <= height ? (newLong, size) : (size, newLong)
        }
    }
}

/// A photo's decoded pixels -> the model's input tensor, exactly as edgekit.preprocess makes
/// it: the platform decodes the file and applies its EXIF orientation (upright RGB8 in, the
/// alpha channel dropped), this does the rest.
///   1. resize with Pillow's 8-bit filter (Resample);
///   2. center crop, zero-padded where the image is smaller than the window;
///   3. uint8 -> float64, times rescale_factor, one rounding to float32;
///   4. (x - mean) / std in float32;
///   5. channel order, then layout NCHW or NHWC with a batch axis of 1.
public struct Preprocessor {
    public let preprocessing: Preprocessing

    public init(_ preprocessing: Preprocessing) {
        self.preprocessing = preprocessing
    }

    /// `rgb`: height x width x 3 bytes, row-major, upright.
    public func run(rgb: [UInt8], height: Int, width: Int) throws -> FloatTensor {
        guard height > 0, width > 0, rgb.count == height * width * 3 else {
            throw EdgekitCoreError(
                "An image of \(width)x\(height) pixels needs \(height * width * 3) RGB bytes; "
                    + "got \(rgb.count).",
                hint: "pass decoded 8-bit RGB pixels (3 bytes per pixel, no alpha)."
            )
        }
        let pre = preprocessing
        // 1. Resize.
        let (newHeight, newWidth) = pre.resizedSize(height: height, width: width)
        var pixels = Resample.resize(
            rgb: rgb, height: height, width: width, newHeight: newHeight, newWidth: newWidth,
            filter: pre.interpolation
        )
        var (currentHeight, currentWidth) = (newHeight, newWidth)
        // 2. Crop.
        if pre.crop == .center {
            pixels = Self.centerCrop(
                pixels, height: currentHeight, width: currentWidth,
                cropHeight: pre.cropHeight!, cropWidth: pre.cropWidth!
            )
            (currentHeight, currentWidth) = (pre.cropHeight!, pre.cropWidth!)
        }
        // 3-5. Rescale in float64 and round once, normalize in float32, reorder, lay out.
        let mean = pre.mean.map { Float($0) }
        let std = pre.std.map { Float($0) }
        let source: [Int] = pre.channelOrder == .bgr ? [2, 1, 0] : [0, 1, 2]
        let planeSize = currentHeight * currentWidth
        var values = [Float](repeating: 0, count: planeSize * 3)
        for position in 0..<planeSize {
            for channel in 0..<3 {
                let rgbChannel = source[channel]
                let rescaled = Float(Double(pixels[position * 3 + rgbChannel]) * pre.rescaleFactor)
                let normalized = (rescaled - mean[rgbChannel]) / std[rgbChannel]
                let target = pre.layout == .nchw
                    ? channel * planeSize + position : position * 3 + channel
                values[target] = normalized
            }
        }
        let shape = pre.layout == .nchw
            ? [1, 3, currentHeight, currentWidth] : [1, currentHeight, currentWidth, 3]
        return FloatTensor(data: values, shape: shape)
    }

    /// A cropHeight x cropWidth window from the middle: top = (H - h) / 2 rounded down (floor
    /// division, negative when the image is smaller), zero padding of ceil(gap / 2) on the
    /// top and left where it is smaller.
    static func centerCrop(
        _ pixels: [UInt8], height: Int, width: Int, cropHeight: Int, cropWidth: Int
    ) -> [UInt8] {
        var top = floorDiv(height - cropHeight, 2)
        var left = floorDiv(width - cropWidth, 2)
        var padded = pixels
        var paddedWidth = width
        if top < 0 || left < 0 {
            let paddedHeight = max(cropHeight, height)
            paddedWidth = max(cropWidth, width)
            let padTop = (paddedHeight - height + 1) / 2  // ceil of half the gap
            let padLeft = (paddedWidth - width + 1) / 2
            padded = [UInt8](repeating: 0, count: paddedHeight * paddedWidth * 3)
            for y in 0..<height {
                let from = y * width * 3
                let to = ((y + padTop) * paddedWidth + padLeft) * 3
                padded.replaceSubrange(to..<(to + width * 3), with: pixels[from..<(from + width * 3)])
            }
            top += padTop
            left += padLeft
        }
        var out = [UInt8](repeating: 0, count: cropHeight * cropWidth * 3)
        for y in 0..<cropHeight {
            let from = ((y + top) * paddedWidth + left) * 3
            let to = y * cropWidth * 3
            out.replaceSubrange(to..<(to + cropWidth * 3), with: padded[from..<(from + cropWidth * 3)])
        }
        return out
    }

    /// Python's `//` for a positive divisor: rounds toward minus infinity.
    static func floorDiv(_ a: Int, _ b: Int) -> Int {
        let quotient = a / b
        return (a % b != 0 && a < 0) ? quotient - 1 : quotient
    }
}
