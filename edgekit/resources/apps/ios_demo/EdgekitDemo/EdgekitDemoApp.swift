import SwiftUI
import UIKit

@main
struct EdgekitDemoApp: App {
    @StateObject private var app = AppModel()

    var body: some Scene {
        WindowGroup {
            ContentView(app: app, camera: app.camera)
                .task { await app.start() }
        }
    }
}

/// What the screens show: the bundled model, its load time, the mode and the benchmark's state.
@MainActor
final class AppModel: ObservableObject {
    enum Mode: String, CaseIterable, Identifiable {
        case camera = "Camera", benchmark = "Benchmark"
        var id: String { rawValue }
    }

    @Published var mode: Mode = .camera
    @Published var warmup = 10
    @Published var runs = 50
    @Published private(set) var info: BundleInfo?
    @Published private(set) var loadMs: Double?
    @Published private(set) var status = "Loading model…"
    @Published private(set) var isBenchmarking = false
    @Published private(set) var progress = 0.0
    @Published private(set) var report: LatencyReport?
    @Published private(set) var reportURL: URL?

    let camera = CameraModel()
    private var classifier: Classifier?
    private var started = false
    private let osVersion = UIDevice.current.systemVersion

    func start() async {
        guard !started else { return }
        started = true
        let launch = LaunchOptions.current()
        do {
            let info = try BundleInfo.load()
            self.info = info
            warmup = launch.warmup ?? info.benchmark.warmup
            runs = launch.runs ?? info.benchmark.runs
            let (classifier, ms) = try await Inference.load(info, osVersion: osVersion)
            self.classifier = classifier
            loadMs = ms
            camera.attach(classifier, labels: info.classNames(), size: info.preprocessing.size)
            status = "\(info.modelName) · \(info.runtime) · loaded in \(Int(ms.rounded())) ms"
        } catch {
            status = error.localizedDescription
            return
        }
        if launch.benchmark {
            mode = .benchmark
            runBenchmark()
        } else if mode == .camera {
            camera.start()
        }
    }

    func modeChanged(to mode: Mode) {
        guard classifier != nil else { return }
        if mode == .camera { camera.start() } else { camera.stop() }
    }

    func runBenchmark() {
        guard let classifier, let info, let loadMs, !isBenchmarking else { return }
        camera.stop()
        isBenchmarking = true
        progress = 0
        let (warmup, runs, osVersion) = (max(self.warmup, 0), max(self.runs, 1), self.osVersion)
        Inference.queue.async {
            var lastShown = 0.0
            let result = Result {
                try Benchmark.run(classifier, info: info, warmup: warmup, runs: runs, loadMs: loadMs,
                                  osVersion: osVersion) { fraction in
                    guard fraction - lastShown >= 0.02 || fraction >= 1 else { return }
                    lastShown = fraction
                    Task { @MainActor in self.progress = fraction }
                }
            }
            Task { @MainActor in self.finish(result) }
        }
    }

    private func finish(_ result: Result<LatencyReport, Error>) {
        isBenchmarking = false
        do {
            let report = try result.get()
            let url = try Benchmark.write(report)
            self.report = report
            reportURL = url
            status = "Report written to Documents/\(Benchmark.reportName)"
            print("edgekit: wrote \(url.path)")
        } catch {
            status = "Benchmark failed: \(error.localizedDescription)"
        }
    }
}
