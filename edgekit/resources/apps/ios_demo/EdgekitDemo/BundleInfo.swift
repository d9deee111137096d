import Foundation

/// `edgekit_bundle.json` (schema `edgekit-bundle/1`), written by `edgekit demo bundle` into
/// EdgekitDemo/Model/: which model file and runtime, the input and output tensors, the preprocessing
/// and the benchmark defaults.
struct BundleInfo: Codable, Equatable {
    static let schemaID = "edgekit-bundle/1"
    static let fileName = "edgekit_bundle.json"

    struct Artifact: Codable, Equatable {
        var name: String?
        var sha256: String
        var bytes: Int?
        var model: String?
        var quantization: String?
    }

    struct Quant: Codable, Equatable {
        var scale: Double?
        var zeroPoint: Int?
    }

    struct TensorSpec: Codable, Equatable {
        var name: String
        var shape: [Int]
        var dtype: String
        var layout: String?
        var quant: Quant?
    }

    struct Preprocessing: Codable, Equatable {
        var size: Int
        var mean: [Double]
        var std: [Double]
        var scale: Double
        var color: String
        var layout: String
        var bakedIn: Bool
    }

    struct BenchmarkDefaults: Codable, Equatable {
        var warmup: Int
        var runs: Int
        var threads: Int
    }

    var schema: String
    var app: String
    var modelFile: String
    var runtime: String
    var delegate: String?
    var artifact: Artifact
    var input: TensorSpec
    var output: TensorSpec
    var preprocessing: Preprocessing
    var labels: String
    var numClasses: Int
    var benchmark: BenchmarkDefaults
    var deviceName: String?
    var computeUnits: String?

    static func decode(_ data: Data) throws -> BundleInfo {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        let info = try decoder.decode(BundleInfo.self, from: data)
        guard info.schema == schemaID else { throw BundleError.wrongSchema(info.schema) }
        guard ["coreml", "executorch"].contains(info.runtime) else { throw BundleError.unsupportedRuntime(info.runtime) }
        return info
    }

    static func load(from bundle: Bundle = .main) throws -> BundleInfo {
        guard let url = resourceURL(fileName, in: bundle) else { throw BundleError.missing(fileName) }
        return try decode(Data(contentsOf: url))
    }

    /// A file from EdgekitDemo/Model/: Xcode copies resources to the bundle's top level; a folder
    /// reference would keep them under Model/, so both places are looked at.
    static func resourceURL(_ file: String, in bundle: Bundle) -> URL? {
        let name = (file as NSString).deletingPathExtension
        let ext = (file as NSString).pathExtension
        return bundle.url(forResource: name, withExtension: ext.isEmpty ? nil : ext)
            ?? bundle.url(forResource: name, withExtension: ext.isEmpty ? nil : ext, subdirectory: "Model")
    }

    /// Class names, one per line of the labels file; numbered names where it is missing or short.
    func classNames(in bundle: Bundle = .main) -> [String] {
        let text = BundleInfo.resourceURL(labels, in: bundle).flatMap { try? String(contentsOf: $0, encoding: .utf8) } ?? ""
        let names = text.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        return names.count >= numClasses ? names : (0..<numClasses).map { "class \($0)" }
    }

    var modelName: String { artifact.model ?? artifact.name ?? modelFile }
}

enum BundleError: LocalizedError {
    case missing(String)
    case wrongSchema(String)
    case unsupportedRuntime(String)

    var errorDescription: String? {
        switch self {
        case .missing(let file):
            return "\(file) is not in the app. Run `edgekit demo bundle ARTIFACT --app ios --out DIR` and build the app in DIR."
        case .wrongSchema(let schema):
            return "\(BundleInfo.fileName) has schema '\(schema)', expected '\(BundleInfo.schemaID)'; bundle again with this edgekit."
        case .unsupportedRuntime(let runtime):
            return "this app runs Core ML and ExecuTorch artifacts, not '\(runtime)'."
        }
    }
}
