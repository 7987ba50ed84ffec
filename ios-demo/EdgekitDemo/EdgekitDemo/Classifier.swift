import CoreML
import EdgekitCore
import Foundation

/// A classifier artifact on Core ML: photo pixels -> EdgekitCore's preprocessing -> the model
/// -> EdgekitCore's top-k with the manifest's labels. The model logic stays in edgekit; this
/// only moves tensors.
final class Classifier {
    struct Result {
        let predictions: [Prediction]
        let preprocessMs: Double
        let inferenceMs: Double
    }

    let artifact: Artifact
    let component: ComponentManifest
    private let model: MLModel
    private let preprocessor: Preprocessor
    private let labels: [String]
    private let input: TensorSpec
    private let output: TensorSpec

    init(_ artifact: Artifact, units: ComputeUnits) async throws {
        let manifest = artifact.manifest
        guard let preprocessing = manifest.preprocessing, let labels = manifest.labels else {
            throw EdgekitCoreError(
                "\(artifact.name) is a \(manifest.modelKind), not a classifier with "
                    + "preprocessing and labels.",
                hint: "pick a MobileViT artifact (edgekit export mobilevit-small --target coreml)."
            )
        }
        // Locals first: a class may not read its own properties before all are set.
        let component = try manifest.component()
        let compiled = try await ModelLoader.compiledModelURL(for: artifact, component: component)
        self.artifact = artifact
        self.component = component
        input = try firstSpec(component.inputs, what: "input", artifact: artifact.name)
        output = try firstSpec(component.outputs, what: "output", artifact: artifact.name)
        model = try ModelLoader.load(compiled, units: units)
        preprocessor = Preprocessor(preprocessing)
        self.labels = labels
    }

    /// `rgb`: upright RGB8 pixels, as ImagePixels.rgb8 decodes them.
    func classify(rgb: [UInt8], height: Int, width: Int, top k: Int = 5) throws -> Result {
        let clock = ContinuousClock()
        var tensor: FloatTensor?
        let preprocessTime = try clock.measure {
            tensor = try preprocessor.run(rgb: rgb, height: height, width: width)
        }
        let batch = input.shape.first ?? 1
        // An artifact exported with batch N takes N images: repeat the photo, read row 0.
        let values = Array([[Float]](repeating: tensor!.data, count: batch).joined())
        let features = try MLDictionaryFeatureProvider(
            dictionary: [input.name: try Tensors.float32(values, input)]
        )
        var outputs: MLFeatureProvider?
        let inferenceTime = try clock.measure { outputs = try model.prediction(from: features) }
        let logits = try Tensors.floats(outputs!, output.name)
        let perImage = logits.count / batch
        let predictions = try topK(logits: Array(logits[0..<perImage]), labels: labels, k: k)
        return Result(
            predictions: predictions, preprocessMs: preprocessTime.milliseconds,
            inferenceMs: inferenceTime.milliseconds
        )
    }
}

/// The first of a component's inputs or outputs (a classifier has one of each).
func firstSpec(_ specs: [TensorSpec], what: String, artifact: String) throws -> TensorSpec {
    guard let first = specs.first else {
        throw EdgekitCoreError(
            "\(artifact)'s manifest lists no \(what).", hint: "export the artifact again."
        )
    }
    return first
}

extension Duration {
    var milliseconds: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) * 1000 + Double(attoseconds) / 1e15
    }
}
