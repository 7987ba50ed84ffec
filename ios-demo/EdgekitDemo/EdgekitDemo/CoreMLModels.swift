import CoreML
import EdgekitCore
import Foundation

/// Which processors Core ML may use, by the names the bench report records.
enum ComputeUnits: String, CaseIterable, Identifiable {
    case cpuOnly, cpuAndGPU, cpuAndNeuralEngine, all

    var id: String { rawValue }

    var mlComputeUnits: MLComputeUnits {
        switch self {
        case .cpuOnly: return .cpuOnly
        case .cpuAndGPU: return .cpuAndGPU
        case .cpuAndNeuralEngine: return .cpuAndNeuralEngine
        case .all: return .all
        }
    }

    /// The manifest's profile spelling (coremltools' ComputeUnit names: "ALL", "CPU_ONLY",
    /// "CPU_AND_GPU", "CPU_AND_NE").
    init?(profileName: String) {
        switch profileName.uppercased() {
        case "ALL": self = .all
        case "CPU_ONLY": self = .cpuOnly
        case "CPU_AND_GPU": self = .cpuAndGPU
        case "CPU_AND_NE": self = .cpuAndNeuralEngine
        default: return nil
        }
    }

    /// What the artifact's target profile asks for, `.all` when it says nothing.
    static func preferred(for manifest: Manifest) -> ComputeUnits {
        manifest.runtimeSetting("compute_units").flatMap(ComputeUnits.init(profileName:)) ?? .all
    }
}

/// Loads the model file a manifest names, compiling an .mlpackage once and keeping the
/// compiled model in Application Support (an app's bundle is read-only).
enum ModelLoader {
    static func compiledModelURL(for artifact: Artifact, component: ComponentManifest) async throws -> URL {
        let source = artifact.folder.appendingPathComponent(component.modelFile)
        guard FileManager.default.fileExists(atPath: source.path) else {
            throw EdgekitCoreError(
                "\(artifact.name) has no \(component.modelFile), which its manifest names.",
                hint: "install the whole artifact folder with `edgekit install`."
            )
        }
        if source.pathExtension == "mlmodelc" { return source }
        let cache = try cacheFolder(for: artifact)
        let compiled = cache.appendingPathComponent(
            source.deletingPathExtension().lastPathComponent + ".mlmodelc"
        )
        if FileManager.default.fileExists(atPath: compiled.path) { return compiled }
        let temporary = try await MLModel.compileModel(at: source)
        try FileManager.default.moveItem(at: temporary, to: compiled)
        return compiled
    }

    static func load(_ compiledURL: URL, units: ComputeUnits) throws -> MLModel {
        let configuration = MLModelConfiguration()
        configuration.computeUnits = units.mlComputeUnits
        return try MLModel(contentsOf: compiledURL, configuration: configuration)
    }

    /// One folder per artifact version: its name and when edgekit wrote it.
    private static func cacheFolder(for artifact: Artifact) throws -> URL {
        let support = try FileManager.default.url(
            for: .applicationSupportDirectory, in: .userDomainMask, appropriateFor: nil,
            create: true
        )
        let stamp = artifact.manifest.createdUTC.filter { $0.isLetter || $0.isNumber }
        let folder = support.appendingPathComponent("CompiledModels")
            .appendingPathComponent("\(artifact.name)-\(stamp)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        return folder
    }
}

/// Tensors in and out of Core ML, shaped as the manifest says.
enum Tensors {
    static func float32(_ values: [Float], _ spec: TensorSpec) throws -> MLMultiArray {
        try check(values.count, spec)
        let array = try MLMultiArray(shape: spec.shape.map { NSNumber(value: $0) }, dataType: .float32)
        // A freshly made MLMultiArray is contiguous in C order.
        array.withUnsafeMutableBufferPointer(ofType: Float.self) { buffer, _ in
            for (index, value) in values.enumerated() { buffer[index] = value }
        }
        return array
    }

    static func int32(_ values: [Int32], _ spec: TensorSpec) throws -> MLMultiArray {
        try check(values.count, spec)
        let array = try MLMultiArray(shape: spec.shape.map { NSNumber(value: $0) }, dataType: .int32)
        array.withUnsafeMutableBufferPointer(ofType: Int32.self) { buffer, _ in
            for (index, value) in values.enumerated() { buffer[index] = value }
        }
        return array
    }

    /// Any output (float16 or float32, whatever its strides) as float32 values in C order.
    static func floats(_ provider: MLFeatureProvider, _ name: String) throws -> [Float] {
        guard let array = provider.featureValue(for: name)?.multiArrayValue else {
            throw EdgekitCoreError(
                "The model has no tensor output '\(name)'.",
                hint: "use the manifest exported with this model file."
            )
        }
        return MLShapedArray<Float>(converting: array).scalars
    }

    private static func check(_ count: Int, _ spec: TensorSpec) throws {
        guard count == spec.elementCount else {
            throw EdgekitCoreError(
                "Input '\(spec.name)' takes \(spec.elementCount) values (\(spec.shape)); got \(count).",
                hint: "the artifact was exported for another size or batch."
            )
        }
    }
}
