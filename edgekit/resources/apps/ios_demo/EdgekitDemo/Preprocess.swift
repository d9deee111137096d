import Foundation

/// Byte order of a 4-channel, 8-bit image: camera frames are BGRA, CGImage/test buffers RGBA.
enum PixelOrder {
    case rgba
    case bgra
}

/// The preprocessing edgekit recorded in the artifact's manifest, done on plain byte buffers.
enum Preprocess {
    /// Center-crop the largest square of a 4-channel image and resize it to `size`×`size` with bilinear
    /// sampling (half-pixel centres, no antialiasing). Returns RGBA bytes, alpha 255.
    static func cropResize(_ src: UnsafeRawBufferPointer, width: Int, height: Int, bytesPerRow: Int,
                           order: PixelOrder, size: Int) -> [UInt8] {
        precondition(width > 0 && height > 0 && size > 0 && bytesPerRow >= width * 4, "bad image geometry")
        precondition(src.count >= bytesPerRow * (height - 1) + width * 4, "buffer smaller than the image")
        let side = min(width, height)
        let x0 = (width - side) / 2, y0 = (height - side) / 2
        let scale = Float(side) / Float(size)
        let (red, blue) = order == .rgba ? (0, 2) : (2, 0)
        let columns = (0..<size).map { tap($0, scale: scale, limit: side) }
        let channels = [(0, red), (1, 1), (2, blue)]  // (output channel, source byte)
        var out = [UInt8](repeating: 255, count: size * size * 4)
        for oy in 0..<size {
            let (ya, yb, fy) = tap(oy, scale: scale, limit: side)
            let rowA = (y0 + ya) * bytesPerRow, rowB = (y0 + yb) * bytesPerRow
            for ox in 0..<size {
                let (xa, xb, fx) = columns[ox]
                let pa = (x0 + xa) * 4, pb = (x0 + xb) * 4
                let dst = (oy * size + ox) * 4
                for (channel, source) in channels {
                    let tl = Float(src[rowA + pa + source]), tr = Float(src[rowA + pb + source])
                    let bl = Float(src[rowB + pa + source]), br = Float(src[rowB + pb + source])
                    let top = tl + (tr - tl) * fx, bottom = bl + (br - bl) * fx
                    out[dst + channel] = UInt8(min(max(top + (bottom - top) * fy + 0.5, 0), 255))
                }
            }
        }
        return out
    }

    static func cropResize(rgba: [UInt8], width: Int, height: Int, size: Int) -> [UInt8] {
        rgba.withUnsafeBytes { cropResize($0, width: width, height: height, bytesPerRow: width * 4, order: .rgba, size: size) }
    }

    /// The two source samples and the weight of the second for output coordinate `o`.
    static func tap(_ o: Int, scale: Float, limit: Int) -> (Int, Int, Float) {
        let s = min(max((Float(o) + 0.5) * scale - 0.5, 0), Float(limit - 1))
        let a = Int(s)
        return (a, min(a + 1, limit - 1), s - Float(a))
    }

    /// `size`×`size` RGBA bytes to the model's float input: x * scale, (x - mean[c]) / std[c], channels in
    /// `spec.color` order, laid out NCHW (or NHWC).
    static func tensor(rgba: [UInt8], size: Int, spec: BundleInfo.Preprocessing) -> [Float] {
        precondition(rgba.count == size * size * 4, "expected \(size)x\(size) RGBA bytes")
        let plane = size * size
        let bgr = spec.color.uppercased() == "BGR"
        let nhwc = spec.layout.uppercased() == "NHWC"
        let scale = Float(spec.scale)
        func perChannel(_ values: [Double], _ fallback: Float) -> [Float] {
            (0..<3).map { values.isEmpty ? fallback : Float(values[values.count == 3 ? $0 : 0]) }
        }
        let mean = perChannel(spec.mean, 0), std = perChannel(spec.std, 1)
        var out = [Float](repeating: 0, count: plane * 3)
        for i in 0..<plane {
            for c in 0..<3 {
                let value = (Float(rgba[i * 4 + (bgr ? 2 - c : c)]) * scale - mean[c]) / std[c]
                out[nhwc ? i * 3 + c : c * plane + i] = value
            }
        }
        return out
    }

    /// A deterministic test image (diagonal colour gradient), the benchmark's input.
    static func gradient(size: Int) -> [UInt8] {
        var out = [UInt8](repeating: 255, count: size * size * 4)
        let span = Float(max(size - 1, 1))
        for y in 0..<size {
            for x in 0..<size {
                let i = (y * size + x) * 4
                out[i] = UInt8(Float(x) / span * 255)
                out[i + 1] = UInt8(Float(y) / span * 255)
                out[i + 2] = UInt8(Float(x + y) / (2 * span) * 255)
            }
        }
        return out
    }
}

/// From the model's output to what the screen shows.
enum Postprocess {
    static func softmax(_ logits: [Float]) -> [Float] {
        guard let top = logits.max() else { return [] }
        let exps = logits.map { exp($0 - top) }
        let total = exps.reduce(0, +)
        return exps.map { $0 / total }
    }

    /// The `k` highest scores, best first, with their class indices.
    static func topK(_ scores: [Float], k: Int) -> [(index: Int, score: Float)] {
        scores.enumerated()
            .sorted { $0.element > $1.element || ($0.element == $1.element && $0.offset < $1.offset) }
            .prefix(k)
            .map { (index: $0.offset, score: $0.element) }
    }
}
