import CoreGraphics
import CoreML
import Foundation
#if canImport(ExecuTorch)
import ExecuTorch
#endif

/// A loaded model. `prepare` turns a `size`×`size` RGBA image into the runtime's input outside any timer,
/// `run` is the prediction alone (what the benchmark times), `logits` reads the last result.
/// Every call after loading happens on `Inference.queue`.
protocol Classifier: AnyObject, Sendable {
    var runtimeVersion: String { get }
    var delegate: String? { get }
    var computeUnits: String? { get }
    var loadNotes: [String] { get }
    func prepare(rgba: [UInt8]) throws
    func run() throws
    func logits() throws -> [Float]
}

enum Inference {
    /// The one queue that runs models: camera frames and benchmark runs take turns on it.
    static let queue = DispatchQueue(label: "ai.edgekit.demo.inference", qos: .userInitiated)

    static func milliseconds(since start: DispatchTime) -> Double {
        Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e6
    }

    /// Loads the bundled model; the time includes compiling a .mlpackage where the build did not.
    static func load(_ info: BundleInfo, osVersion: String, bundle: Bundle = .main) async throws -> (Classifier, Double) {
        let start = DispatchTime.now()
        let classifier: Classifier
        switch info.runtime {
        case "coreml":
            classifier = try await CoreMLClassifier(info: info, osVersion: osVersion, bundle: bundle)
        case "executorch":
            #if canImport(ExecuTorch)
            classifier = try ExecuTorchClassifier(info: info, osVersion: osVersion, bundle: bundle)
            #else
            throw ClassifierError.executorchMissing
            #endif
        default:
            throw BundleError.unsupportedRuntime(info.runtime)
        }
        return (classifier, milliseconds(since: start))
    }
}

enum ClassifierError: LocalizedError {
    case modelMissing(String)
    case executorchMissing
    case notPrepared
    case badInput(String)
    case noOutput(String)

    var errorDescription: String? {
        switch self {
        case .modelMissing(let file): return "\(file) is not in the app bundle; bundle the app again with `edgekit demo bundle`."
        case .executorchMissing: return "this bundle holds a .pte: add the ExecuTorch package (see README, project.yml) and rebuild."
        case .notPrepared: return "no input prepared"
        case .badInput(let why): return "cannot build the model input: \(why)"
        case .noOutput(let name): return "the model gave no tensor output '\(name)'"
        }
    }
}

/// The float input as `shape` says, where its element count fits; else [1, 3, size, size] (or NHWC).
private func inputShape(_ info: BundleInfo, count: Int) -> [Int] {
    if info.input.shape.reduce(1, *) == count { return info.input.shape }
    let s = info.preprocessing.size
    return info.preprocessing.layout.uppercased() == "NHWC" ? [1, s, s, 3] : [1, 3, s, s]
}

final class CoreMLClassifier: Classifier, @unchecked Sendable {
    let runtimeVersion: String
    let delegate: String? = nil
    let computeUnits: String?
    let loadNotes: [String]
    private let info: BundleInfo
    private let model: MLModel
    private let inputName: String
    private let outputName: String
    private var input: MLFeatureProvider?
    private var output: MLFeatureProvider?

    init(info: BundleInfo, osVersion: String, bundle: Bundle) async throws {
        self.info = info
        runtimeVersion = "iOS \(osVersion) Core ML"
        let units = info.computeUnits ?? "all"
        computeUnits = units
        let config = MLModelConfiguration()
        switch units {
        case "cpuOnly": config.computeUnits = .cpuOnly
        case "cpuAndGPU": config.computeUnits = .cpuAndGPU
        case "cpuAndNeuralEngine": config.computeUnits = .cpuAndNeuralEngine
        default: config.computeUnits = .all
        }
        let base = (info.modelFile as NSString).deletingPathExtension
        let url: URL
        var notes: [String] = []
        if let compiled = BundleInfo.resourceURL(base + ".mlmodelc", in: bundle) {
            url = compiled  // Xcode compiled model.mlpackage at build time
        } else if let package = BundleInfo.resourceURL(info.modelFile, in: bundle) {
            url = try await MLModel.compileModel(at: package)
            notes.append("load_ms includes compiling \(info.modelFile) on the device")
        } else {
            throw ClassifierError.modelMissing(info.modelFile)
        }
        loadNotes = notes
        model = try MLModel(contentsOf: url, configuration: config)
        let description = model.modelDescription
        inputName = description.inputDescriptionsByName[info.input.name] != nil
            ? info.input.name : description.inputDescriptionsByName.keys.sorted().first ?? info.input.name
        outputName = description.outputDescriptionsByName[info.output.name] != nil
            ? info.output.name : description.outputDescriptionsByName.keys.sorted().first ?? info.output.name
    }

    func prepare(rgba: [UInt8]) throws {
        let size = info.preprocessing.size
        let value: MLFeatureValue
        if let constraint = model.modelDescription.inputDescriptionsByName[inputName]?.imageConstraint {
            // normalisation is baked into the model: it takes the picture itself
            guard let image = Self.cgImage(rgba: rgba, size: size) else { throw ClassifierError.badInput("CGImage") }
            value = try MLFeatureValue(cgImage: image, constraint: constraint, options: nil)
        } else {
            let floats = Preprocess.tensor(rgba: rgba, size: size, spec: info.preprocessing)
            let shape = inputShape(info, count: floats.count)
            let array = try MLMultiArray(shape: shape.map { NSNumber(value: $0) }, dataType: .float32)
            guard array.count == floats.count else { throw ClassifierError.badInput("shape \(shape)") }
            array.withUnsafeMutableBufferPointer(ofType: Float.self) { buffer, _ in
                // a freshly allocated MLMultiArray is contiguous (C order)
                floats.withUnsafeBufferPointer { buffer.baseAddress!.update(from: $0.baseAddress!, count: floats.count) }
            }
            value = MLFeatureValue(multiArray: array)
        }
        input = try MLDictionaryFeatureProvider(dictionary: [inputName: value])
    }

    func run() throws {
        guard let input else { throw ClassifierError.notPrepared }
        output = try model.prediction(from: input)
    }

    func logits() throws -> [Float] {
        guard let array = output?.featureValue(for: outputName)?.multiArrayValue else {
            throw ClassifierError.noOutput(outputName)
        }
        return (0..<array.count).map { array[$0].floatValue }
    }

    static func cgImage(rgba: [UInt8], size: Int) -> CGImage? {
        guard let provider = CGDataProvider(data: Data(rgba) as CFData) else { return nil }
        return CGImage(width: size, height: size, bitsPerComponent: 8, bitsPerPixel: 32, bytesPerRow: size * 4,
                       space: CGColorSpaceCreateDeviceRGB(),
                       bitmapInfo: CGBitmapInfo(rawValue: CGImageAlphaInfo.noneSkipLast.rawValue),
                       provider: provider, decode: nil, shouldInterpolate: false, intent: .defaultIntent)
    }
}

#if canImport(ExecuTorch)
/// A .pte program through ExecuTorch's Swift API (package branch swiftpm-1.0.0 or later).
final class ExecuTorchClassifier: Classifier, @unchecked Sendable {
    let runtimeVersion: String
    let delegate: String?
    let computeUnits: String? = nil
    let loadNotes: [String] = []
    private let info: BundleInfo
    private let module: Module
    private var input: Tensor<Float>?
    private var outputs: [Value] = []

    init(info: BundleInfo, osVersion: String, bundle: Bundle) throws {
        self.info = info
        let version = Bundle.main.object(forInfoDictionaryKey: "EdgekitExecuTorchVersion") as? String ?? "unknown"
        runtimeVersion = "ExecuTorch \(version) (iOS \(osVersion))"
        delegate = info.delegate ?? "xnnpack"
        guard let url = BundleInfo.resourceURL(info.modelFile, in: bundle) else {
            throw ClassifierError.modelMissing(info.modelFile)
        }
        module = Module(filePath: url.path)
        try module.load("forward")
    }

    func prepare(rgba: [UInt8]) throws {
        let floats = Preprocess.tensor(rgba: rgba, size: info.preprocessing.size, spec: info.preprocessing)
        input = Tensor<Float>(floats, shape: inputShape(info, count: floats.count))
    }

    func run() throws {
        guard let input else { throw ClassifierError.notPrepared }
        outputs = try module.forward([input])
    }

    func logits() throws -> [Float] {
        guard let tensor: Tensor<Float> = outputs.first?.tensor() else { throw ClassifierError.noOutput(info.output.name) }
        return try tensor.scalars()  // `try`: throwing in some ExecuTorch releases
    }
}
#endif
