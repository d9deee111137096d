import AVFoundation
import SwiftUI
import UIKit

struct Prediction: Identifiable, Equatable {
    let label: String
    let score: Float
    var id: String { label }
}

/// The back camera: BGRA frames go to `Inference.queue`, are center-cropped and resized as the bundle
/// says, classified, and the top 3 and the per-frame inference time are published on the main thread.
final class CameraModel: NSObject, ObservableObject, AVCaptureVideoDataOutputSampleBufferDelegate, @unchecked Sendable {
    @Published private(set) var predictions: [Prediction] = []
    @Published private(set) var inferenceMs: Double?
    @Published private(set) var message: String?

    let session = AVCaptureSession()
    private let sessionQueue = DispatchQueue(label: "ai.edgekit.demo.session")
    private var configured = false           // sessionQueue only
    private var classifier: Classifier?      // Inference.queue only
    private var labels: [String] = []        // Inference.queue only
    private var size = 0                     // Inference.queue only

    func attach(_ classifier: Classifier, labels: [String], size: Int) {
        Inference.queue.async {
            self.classifier = classifier
            self.labels = labels
            self.size = size
        }
    }

    func start() {
        switch AVCaptureDevice.authorizationStatus(for: .video) {
        case .authorized:
            startSession()
        case .notDetermined:
            AVCaptureDevice.requestAccess(for: .video) { granted in
                if granted { self.startSession() } else { self.publish(message: "Camera access denied") }
            }
        default:
            publish(message: "Camera access is off: allow it in Settings > Privacy > Camera")
        }
    }

    func stop() {
        sessionQueue.async {
            if self.session.isRunning { self.session.stopRunning() }
        }
    }

    private func startSession() {
        sessionQueue.async {
            if !self.configured {
                do {
                    try self.configure()
                    self.configured = true
                } catch {
                    self.publish(message: "Camera unavailable: \(error.localizedDescription)")
                    return
                }
            }
            if !self.session.isRunning { self.session.startRunning() }
        }
    }

    private func configure() throws {
        guard let device = AVCaptureDevice.default(.builtInWideAngleCamera, for: .video, position: .back)
                ?? AVCaptureDevice.default(for: .video) else {
            throw CameraError.noCamera
        }
        session.beginConfiguration()
        defer { session.commitConfiguration() }
        session.sessionPreset = .vga640x480
        let input = try AVCaptureDeviceInput(device: device)
        guard session.canAddInput(input) else { throw CameraError.cannotAdd }
        session.addInput(input)
        let output = AVCaptureVideoDataOutput()
        output.videoSettings = [kCVPixelBufferPixelFormatTypeKey as String: kCVPixelFormatType_32BGRA]
        output.alwaysDiscardsLateVideoFrames = true
        output.setSampleBufferDelegate(self, queue: Inference.queue)
        guard session.canAddOutput(output) else { throw CameraError.cannotAdd }
        session.addOutput(output)
        if let connection = output.connection(with: .video), connection.isVideoRotationAngleSupported(90) {
            connection.videoRotationAngle = 90  // portrait frames, as the preview shows them
        }
    }

    // Runs on Inference.queue; late frames are dropped while a prediction is under way.
    func captureOutput(_ output: AVCaptureOutput, didOutput sampleBuffer: CMSampleBuffer, from connection: AVCaptureConnection) {
        guard let classifier, size > 0, let pixels = CMSampleBufferGetImageBuffer(sampleBuffer) else { return }
        CVPixelBufferLockBaseAddress(pixels, .readOnly)
        let width = CVPixelBufferGetWidth(pixels), height = CVPixelBufferGetHeight(pixels)
        let bytesPerRow = CVPixelBufferGetBytesPerRow(pixels)
        guard let base = CVPixelBufferGetBaseAddress(pixels) else {
            CVPixelBufferUnlockBaseAddress(pixels, .readOnly)
            return
        }
        let rgba = Preprocess.cropResize(UnsafeRawBufferPointer(start: base, count: bytesPerRow * height),
                                         width: width, height: height, bytesPerRow: bytesPerRow,
                                         order: .bgra, size: size)
        CVPixelBufferUnlockBaseAddress(pixels, .readOnly)
        do {
            try classifier.prepare(rgba: rgba)
            let start = DispatchTime.now()
            try classifier.run()
            let ms = Inference.milliseconds(since: start)
            let probabilities = Postprocess.softmax(try classifier.logits())
            let top = Postprocess.topK(probabilities, k: 3).map { hit in
                Prediction(label: hit.index < labels.count ? labels[hit.index] : "class \(hit.index)", score: hit.score)
            }
            DispatchQueue.main.async {
                self.predictions = top
                self.inferenceMs = ms
                self.message = nil
            }
        } catch {
            publish(message: "Inference failed: \(error.localizedDescription)")
        }
    }

    private func publish(message: String) {
        DispatchQueue.main.async { self.message = message }
    }
}

enum CameraError: LocalizedError {
    case noCamera, cannotAdd
    var errorDescription: String? {
        self == .noCamera ? "no camera on this device" : "the capture session refused the camera"
    }
}

/// The live camera picture behind the results.
struct CameraPreview: UIViewRepresentable {
    let session: AVCaptureSession

    final class PreviewView: UIView {
        override class var layerClass: AnyClass { AVCaptureVideoPreviewLayer.self }
        var previewLayer: AVCaptureVideoPreviewLayer { layer as! AVCaptureVideoPreviewLayer }
    }

    func makeUIView(context: Context) -> PreviewView {
        let view = PreviewView()
        view.previewLayer.session = session
        view.previewLayer.videoGravity = .resizeAspectFill
        return view
    }

    func updateUIView(_ uiView: PreviewView, context: Context) {}
}
