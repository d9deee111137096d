import Darwin
import Foundation

/// `-benchmark 1 -runs 50 -warmup 10` after `--` in `xcrun devicectl device process launch`: launch
/// arguments land in UserDefaults' argument domain.
struct LaunchOptions {
    var benchmark: Bool
    var runs: Int?
    var warmup: Int?

    static func current(_ defaults: UserDefaults = .standard) -> LaunchOptions {
        func int(_ key: String) -> Int? { defaults.object(forKey: key) == nil ? nil : defaults.integer(forKey: key) }
        return LaunchOptions(benchmark: defaults.bool(forKey: "benchmark"), runs: int("runs"), warmup: int("warmup"))
    }
}

enum DeviceInfo {
    /// The hardware identifier, e.g. "iPhone16,1" (the simulated one on the simulator).
    static func hardwareModel() -> String {
        if let simulated = ProcessInfo.processInfo.environment["SIMULATOR_MODEL_IDENTIFIER"] { return simulated }
        var system = utsname()
        uname(&system)
        return withUnsafeBytes(of: &system.machine) { raw in
            String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
        }
    }

    /// This process's peak physical footprint in MB (task_vm_info), or nil where the kernel does not say.
    static func peakMemoryMB() -> Double? {
        var info = task_vm_info_data_t()
        var count = mach_msg_type_number_t(MemoryLayout<task_vm_info_data_t>.size / MemoryLayout<natural_t>.size)
        let status = withUnsafeMutablePointer(to: &info) {
            $0.withMemoryRebound(to: integer_t.self, capacity: Int(count)) {
                task_info(mach_task_self_, task_flavor_t(TASK_VM_INFO), $0, &count)
            }
        }
        guard status == KERN_SUCCESS else { return nil }
        let bytes = info.ledger_phys_footprint_peak > 0 ? Double(info.ledger_phys_footprint_peak) : Double(info.phys_footprint)
        return bytes > 0 ? bytes / 1_048_576 : nil
    }
}

enum Benchmark {
    static let reportName = "edgekit_report.json"

    /// Warm-up runs, then `runs` timed runs of the prediction alone on one prepared input. Call on
    /// `Inference.queue`; `progress` gets the fraction done.
    static func run(_ classifier: Classifier, info: BundleInfo, warmup: Int, runs: Int, loadMs: Double,
                    osVersion: String, progress: (Double) -> Void) throws -> LatencyReport {
        let size = info.preprocessing.size
        try classifier.prepare(rgba: Preprocess.gradient(size: size))
        let total = Double(max(warmup + runs, 1))
        for i in 0..<max(warmup, 0) {
            try classifier.run()
            progress(Double(i + 1) / total)
        }
        var samples: [Double] = []
        samples.reserveCapacity(runs)
        for i in 0..<max(runs, 1) {
            let start = DispatchTime.now()
            try classifier.run()
            samples.append(Inference.milliseconds(since: start))
            progress(Double(warmup + i + 1) / total)
        }
        var notes = ["measured by the edgekit iOS demo app",
                     "timed: the prediction call alone, on one \(size)x\(size) synthetic image prepared before timing",
                     "peak_memory_mb: the app's peak physical footprint (task_vm_info), camera included if it ran"]
        if info.benchmark.threads != 0 {
            notes.append("the bundle asked for \(info.benchmark.threads) threads; this app leaves threads to the runtime")
        }
        notes += classifier.loadNotes
        return LatencyReport.make(
            samplesMs: samples, warmup: max(warmup, 0), threads: 0, loadMs: loadMs,
            peakMemoryMb: DeviceInfo.peakMemoryMB(),
            device: .init(name: info.deviceName ?? "iphone", via: "app", model: DeviceInfo.hardwareModel(),
                          os: "iOS \(osVersion)"),
            runtime: .init(name: info.runtime, version: classifier.runtimeVersion, delegate: classifier.delegate,
                           computeUnits: classifier.computeUnits),
            artifact: .init(sha256: info.artifact.sha256, name: info.artifact.name, bytes: info.artifact.bytes,
                            model: info.artifact.model, quantization: info.artifact.quantization,
                            inputShape: info.input.shape),
            notes: notes)
    }

    /// Writes the report to Documents/edgekit_report.json (visible in Files and Finder) and returns its URL.
    static func write(_ report: LatencyReport) throws -> URL {
        let documents = try FileManager.default.url(for: .documentDirectory, in: .userDomainMask,
                                                    appropriateFor: nil, create: true)
        let url = documents.appendingPathComponent(reportName)
        try report.jsonData().write(to: url, options: .atomic)
        return url
    }
}
