import Foundation

/// One measurement of one artifact on this device, in edgekit's latency report schema
/// (`edgekit/profile/report.schema.json`, "edgekit-latency-report/1"), which `edgekit profile import` reads.
/// Optional values are written as JSON null, never left out.
struct LatencyReport: Codable, Equatable {
    static let schemaID = "edgekit-latency-report/1"

    struct Device: Codable, Equatable {
        var name: String
        var via: String
        var model: String
        var os: String
    }

    struct Runtime: Codable, Equatable {
        var name: String
        var version: String
        var delegate: String?
        var computeUnits: String?

        enum CodingKeys: String, CodingKey {
            case name, version, delegate
            case computeUnits = "compute_units"
        }

        func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(name, forKey: .name)
            try c.encode(version, forKey: .version)
            try c.encodeOrNull(delegate, forKey: .delegate)
            try c.encodeOrNull(computeUnits, forKey: .computeUnits)
        }
    }

    struct Artifact: Codable, Equatable {
        var sha256: String
        var name: String?
        var bytes: Int?
        var model: String?
        var quantization: String?
        var inputShape: [Int]

        enum CodingKeys: String, CodingKey {
            case sha256, name, bytes, model, quantization
            case inputShape = "input_shape"
        }

        func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(sha256, forKey: .sha256)
            try c.encodeIfPresent(name, forKey: .name)  // string / integer in the schema: no null allowed
            try c.encodeIfPresent(bytes, forKey: .bytes)
            try c.encodeOrNull(model, forKey: .model)
            try c.encodeOrNull(quantization, forKey: .quantization)
            try c.encode(inputShape, forKey: .inputShape)
        }
    }

    var schema = LatencyReport.schemaID
    var created: String
    var device: Device
    var runtime: Runtime
    var artifact: Artifact
    var threads: Int
    var warmup: Int
    var runs: Int
    var samplesMs: [Double]
    var minMs: Double?
    var medianMs: Double?
    var meanMs: Double?
    var p90Ms: Double?
    var iqrMs: Double?
    var loadMs: Double?
    var peakMemoryMb: Double?
    var notes: [String]

    enum CodingKeys: String, CodingKey {
        case schema, created, device, runtime, artifact, threads, warmup, runs, notes
        case samplesMs = "samples_ms", minMs = "min_ms", medianMs = "median_ms", meanMs = "mean_ms"
        case p90Ms = "p90_ms", iqrMs = "iqr_ms", loadMs = "load_ms", peakMemoryMb = "peak_memory_mb"
    }

    /// A report from the timed runs, in run order; every number is rounded to 4 decimals first and the
    /// statistics are computed from the rounded samples, so the file is consistent with itself.
    static func make(samplesMs: [Double], warmup: Int, threads: Int, loadMs: Double?, peakMemoryMb: Double?,
                     device: Device, runtime: Runtime, artifact: Artifact, notes: [String],
                     created: Date = Date()) -> LatencyReport {
        let samples = samplesMs.map { Stats.rounded(max($0, 0)) }
        let stats = LatencyStats(samples: samples)
        return LatencyReport(
            created: ISO8601DateFormatter().string(from: created),
            device: device, runtime: runtime, artifact: artifact,
            threads: threads, warmup: warmup, runs: samples.count, samplesMs: samples,
            minMs: stats.map { Stats.rounded($0.min) }, medianMs: stats.map { Stats.rounded($0.median) },
            meanMs: stats.map { Stats.rounded($0.mean) }, p90Ms: stats.map { Stats.rounded($0.p90) },
            iqrMs: stats.map { Stats.rounded($0.iqr) },
            loadMs: loadMs.map { Stats.rounded($0, places: 3) },
            peakMemoryMb: peakMemoryMb.map { Stats.rounded($0, places: 1) },
            notes: notes)
    }

    func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(schema, forKey: .schema)
        try c.encode(created, forKey: .created)
        try c.encode(device, forKey: .device)
        try c.encode(runtime, forKey: .runtime)
        try c.encode(artifact, forKey: .artifact)
        try c.encode(threads, forKey: .threads)
        try c.encode(warmup, forKey: .warmup)
        try c.encode(runs, forKey: .runs)
        try c.encode(samplesMs, forKey: .samplesMs)
        try c.encodeOrNull(minMs, forKey: .minMs)
        try c.encodeOrNull(medianMs, forKey: .medianMs)
        try c.encodeOrNull(meanMs, forKey: .meanMs)
        try c.encodeOrNull(p90Ms, forKey: .p90Ms)
        try c.encodeOrNull(iqrMs, forKey: .iqrMs)
        try c.encodeOrNull(loadMs, forKey: .loadMs)
        try c.encodeOrNull(peakMemoryMb, forKey: .peakMemoryMb)
        try c.encode(notes, forKey: .notes)
    }

    /// Pretty-printed JSON with sorted keys and a final newline: the bytes the app writes.
    func jsonData() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        var data = try encoder.encode(self)
        data.append(0x0A)
        return data
    }
}

extension KeyedEncodingContainer {
    /// Writes `value`, or an explicit JSON null where it is nil.
    mutating func encodeOrNull<T: Encodable>(_ value: T?, forKey key: Key) throws {
        if let value {
            try encode(value, forKey: key)
        } else {
            try encodeNil(forKey: key)
        }
    }
}
