import SwiftUI

struct ContentView: View {
    @ObservedObject var app: AppModel
    @ObservedObject var camera: CameraModel

    var body: some View {
        NavigationStack {
            VStack(spacing: 12) {
                Picker("Mode", selection: $app.mode) {
                    ForEach(AppModel.Mode.allCases) { Text($0.rawValue).tag($0) }
                }
                .pickerStyle(.segmented)
                .disabled(app.isBenchmarking)
                Text(app.status)
                    .font(.footnote)
                    .foregroundStyle(.secondary)
                    .frame(maxWidth: .infinity, alignment: .leading)
                switch app.mode {
                case .camera: cameraPane
                case .benchmark: benchmarkPane
                }
            }
            .padding()
            .navigationTitle("edgekit")
            .onChange(of: app.mode) { _, mode in app.modeChanged(to: mode) }
        }
    }

    private var cameraPane: some View {
        ZStack(alignment: .bottom) {
            CameraPreview(session: camera.session)
                .clipShape(RoundedRectangle(cornerRadius: 12))
            VStack(alignment: .leading, spacing: 6) {
                if let message = camera.message {
                    Text(message)
                }
                ForEach(camera.predictions) { prediction in
                    HStack {
                        Text(prediction.label).lineLimit(1)
                        Spacer()
                        Text(String(format: "%.1f%%", prediction.score * 100)).monospacedDigit()
                    }
                }
                if let ms = camera.inferenceMs {
                    Text(String(format: "inference %.2f ms", ms))
                        .font(.caption).monospacedDigit().foregroundStyle(.secondary)
                }
            }
            .padding()
            .frame(maxWidth: .infinity, alignment: .leading)
            .background(.ultraThinMaterial, in: RoundedRectangle(cornerRadius: 12))
            .padding(8)
        }
    }

    private var benchmarkPane: some View {
        Form {
            Section("Runs") {
                Stepper("Warm-up: \(app.warmup)", value: $app.warmup, in: 0...500, step: 5)
                Stepper("Timed runs: \(app.runs)", value: $app.runs, in: 1...5000, step: 10)
                Button(app.isBenchmarking ? "Running…" : "Run benchmark") { app.runBenchmark() }
                    .disabled(app.isBenchmarking || app.loadMs == nil)
                if app.isBenchmarking {
                    ProgressView(value: app.progress)
                }
            }
            if let report = app.report {
                Section("Latency (ms)") {
                    row("min", report.minMs)
                    row("median", report.medianMs)
                    row("mean", report.meanMs)
                    row("p90", report.p90Ms)
                    row("IQR", report.iqrMs)
                    row("load", report.loadMs)
                    row("peak memory (MB)", report.peakMemoryMb)
                    LabeledContent("runs", value: "\(report.runs) after \(report.warmup) warm-up")
                    LabeledContent("runtime", value: report.runtime.version)
                }
                if let url = app.reportURL {
                    Section("Report") {
                        ShareLink(item: url) { Label("Share \(url.lastPathComponent)", systemImage: "square.and.arrow.up") }
                        Text("Also in Files › On My iPhone › Edgekit Demo. Import it on your computer with `edgekit profile import \(url.lastPathComponent)`.")
                            .font(.footnote).foregroundStyle(.secondary)
                    }
                }
            }
        }
    }

    private func row(_ name: String, _ value: Double?) -> some View {
        LabeledContent(name, value: value.map { String(format: "%.3f", $0) } ?? "n/a")
    }
}
