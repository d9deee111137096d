import XCTest

final class PreprocessTests: XCTestCase {
    private let imagenet = BundleInfo.Preprocessing(
        size: 2, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225],
        scale: 1.0 / 255, color: "RGB", layout: "NCHW", bakedIn: false)

    /// A `width`×`height` RGBA image whose pixel (x, y) is (x, y, x + y, 255) scaled by 10.
    private func image(width: Int, height: Int) -> [UInt8] {
        (0..<height).flatMap { y in (0..<width).flatMap { x in [UInt8(x * 10), UInt8(y * 10), UInt8((x + y) * 10), 255] } }
    }

    func testSameSizeIsACopy() {
        let src = image(width: 3, height: 3)
        XCTAssertEqual(Preprocess.cropResize(rgba: src, width: 3, height: 3, size: 3), src)
    }

    func testCropsTheCentreSquare() {
        // 4x2: the centre 2x2 square is columns 1 and 2
        let out = Preprocess.cropResize(rgba: image(width: 4, height: 2), width: 4, height: 2, size: 2)
        XCTAssertEqual(Array(out[0..<4]), [10, 0, 10, 255])
        XCTAssertEqual(Array(out[4..<8]), [20, 0, 20, 255])
        XCTAssertEqual(Array(out[8..<12]), [10, 10, 20, 255])
    }

    func testBilinearDownscaleAveragesNeighbours() {
        // 2x2 -> 1x1 samples the centre: the mean of the four pixels
        let src: [UInt8] = [0, 0, 0, 255, 100, 0, 0, 255, 0, 200, 0, 255, 100, 200, 40, 255]
        XCTAssertEqual(Preprocess.cropResize(rgba: src, width: 2, height: 2, size: 1), [50, 100, 10, 255])
    }

    func testBGRAFramesComeOutRGBA() {
        let bgra: [UInt8] = [30, 20, 10, 255]
        let out = bgra.withUnsafeBytes {
            Preprocess.cropResize($0, width: 1, height: 1, bytesPerRow: 4, order: .bgra, size: 1)
        }
        XCTAssertEqual(out, [10, 20, 30, 255])
    }

    func testRowPaddingIsSkipped() {
        // 1x3 image, 8 bytes per row (4 of padding): the centre 1x1 square is row 1
        let padded: [UInt8] = [1, 2, 3, 255, 9, 9, 9, 9, 4, 5, 6, 255, 9, 9, 9, 9, 7, 8, 9, 255, 9, 9, 9, 9]
        let out = padded.withUnsafeBytes {
            Preprocess.cropResize($0, width: 1, height: 3, bytesPerRow: 8, order: .rgba, size: 1)
        }
        XCTAssertEqual(out, [4, 5, 6, 255])
    }

    func testNormalisesIntoNCHW() {
        let rgba: [UInt8] = [255, 0, 128, 255, 0, 255, 0, 255, 0, 0, 0, 255, 255, 255, 255, 255]
        let t = Preprocess.tensor(rgba: rgba, size: 2, spec: imagenet)
        XCTAssertEqual(t.count, 12)
        XCTAssertEqual(t[0], (1 - 0.485) / 0.229, accuracy: 1e-5)              // R of pixel 0
        XCTAssertEqual(t[1], (0 - 0.485) / 0.229, accuracy: 1e-5)              // R of pixel 1
        XCTAssertEqual(t[4 + 1], (1 - 0.456) / 0.224, accuracy: 1e-5)          // G of pixel 1
        XCTAssertEqual(t[8], (128.0 / 255 - 0.406) / 0.225, accuracy: 1e-5)   // B of pixel 0
        XCTAssertEqual(t[11], (1 - 0.406) / 0.225, accuracy: 1e-5)            // B of pixel 3
    }

    func testNHWCAndBGR() {
        var spec = imagenet
        spec.size = 1
        spec.layout = "NHWC"
        spec.color = "BGR"
        spec.mean = [0, 0, 0]
        spec.std = [1, 1, 1]
        spec.scale = 1
        XCTAssertEqual(Preprocess.tensor(rgba: [1, 2, 3, 255], size: 1, spec: spec), [3, 2, 1])
    }

    func testSoftmaxAndTopK() {
        let p = Postprocess.softmax([1, 3, 2, 3])
        XCTAssertEqual(p.reduce(0, +), 1, accuracy: 1e-6)
        let top = Postprocess.topK(p, k: 3)
        XCTAssertEqual(top.map(\.index), [1, 3, 2])  // ties keep class order
        XCTAssertEqual(top[0].score, p[1])
    }
}
