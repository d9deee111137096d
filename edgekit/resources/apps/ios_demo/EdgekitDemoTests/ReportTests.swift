import XCTest

final class ReportTests: XCTestCase {
    static let bundleJSON = """
    {"schema": "edgekit-bundle/1", "app": "ios", "model_file": "model.mlpackage", "runtime": "coreml",
     "artifact": {"name": "quickstart.mlpackage", "sha256": "\(String(repeating: "ab", count: 32))", "bytes": 1210000,
                  "model": "mobilevig_ti", "quantization": "w8"},
     "input": {"name": "input", "shape": [1, 3, 32, 32], "dtype": "float32", "layout": "NCHW", "quant": null},
     "output": {"name": "logits", "shape": [1, 10], "dtype": "float32", "quant": null},
     "preprocessing": {"size": 32, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                       "scale": 0.00392156862745098, "color": "RGB", "layout": "NCHW", "baked_in": false},
     "labels": "labels.txt", "num_classes": 10, "benchmark": {"warmup": 10, "runs": 50, "threads": 0},
     "device_name": "iphone", "compute_units": "all"}
    """

    func testDecodesTheBundle() throws {
        let info = try BundleInfo.decode(Data(Self.bundleJSON.utf8))
        XCTAssertEqual(info.modelFile, "model.mlpackage")
        XCTAssertEqual(info.input.shape, [1, 3, 32, 32])
        XCTAssertEqual(info.preprocessing.size, 32)
        XCTAssertFalse(info.preprocessing.bakedIn)
        XCTAssertEqual(info.benchmark.runs, 50)
        XCTAssertEqual(info.computeUnits, "all")
        XCTAssertNil(info.delegate)
        XCTAssertNil(info.input.quant)
    }

    func testRejectsAnotherSchema() {
        let other = Self.bundleJSON.replacingOccurrences(of: "edgekit-bundle/1", with: "edgekit-bundle/9")
        XCTAssertThrowsError(try BundleInfo.decode(Data(other.utf8)))
    }

    private func report(samples: [Double], peak: Double?) -> LatencyReport {
        LatencyReport.make(
            samplesMs: samples, warmup: 10, threads: 0, loadMs: 212.4, peakMemoryMb: peak,
            device: .init(name: "iphone", via: "app", model: "iPhone16,1", os: "iOS 18.1"),
            runtime: .init(name: "coreml", version: "iOS 18.1 Core ML", delegate: nil, computeUnits: "all"),
            artifact: .init(sha256: String(repeating: "ab", count: 32), name: "quickstart.mlpackage", bytes: 1210000,
                            model: "mobilevig_ti", quantization: nil, inputShape: [1, 3, 32, 32]),
            notes: ["test"], created: Date(timeIntervalSince1970: 0))
    }

    func testStatisticsComeFromTheSamples() {
        let r = report(samples: [1.31, 1.2, 1.41, 1.25, 1.3], peak: 48.25)
        XCTAssertEqual(r.schema, "edgekit-latency-report/1")
        XCTAssertEqual(r.runs, 5)
        XCTAssertEqual(r.samplesMs, [1.31, 1.2, 1.41, 1.25, 1.3])  // run order kept
        XCTAssertEqual(r.minMs, 1.2)
        XCTAssertEqual(r.medianMs, 1.3)
        XCTAssertEqual(r.meanMs, 1.294)
        XCTAssertEqual(r.p90Ms, 1.37)
        XCTAssertEqual(r.iqrMs, 0.06)
        XCTAssertEqual(r.peakMemoryMb, 48.3)
        XCTAssertEqual(r.created, "1970-01-01T00:00:00Z")
    }

    func testNullsAreWrittenAndKeysSorted() throws {
        let data = try report(samples: [2, 1], peak: nil).jsonData()
        let text = try XCTUnwrap(String(data: data, encoding: .utf8))
        XCTAssertTrue(text.contains("\"peak_memory_mb\" : null"))
        XCTAssertTrue(text.contains("\"delegate\" : null"))
        XCTAssertTrue(text.contains("\"quantization\" : null"))
        XCTAssertTrue(text.hasSuffix("\n"))
        let object = try XCTUnwrap(JSONSerialization.jsonObject(with: data) as? [String: Any])
        XCTAssertEqual(object.keys.sorted(), ["artifact", "created", "device", "iqr_ms", "load_ms", "mean_ms",
                                              "median_ms", "min_ms", "notes", "p90_ms", "peak_memory_mb", "runs",
                                              "runtime", "samples_ms", "schema", "threads", "warmup"])
        let keys = object.keys.sorted()
        let positions = keys.map { text.range(of: "\n  \"\($0)\" : ")!.lowerBound }
        XCTAssertEqual(positions, positions.sorted())  // written in sorted order
        XCTAssertEqual(try JSONDecoder().decode(LatencyReport.self, from: data), report(samples: [2, 1], peak: nil))
    }
}
