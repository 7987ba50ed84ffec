import Foundation

/// The artifact's `manifest.json`, as edgekit writes it (edgekit/schemas/manifest.schema.json).
/// Apps read this, never file names: which file holds each component, its input and output
/// names, shapes and dtypes, how a photo becomes the input tensor, the labels, and for Stable
/// Diffusion how the components, tokenizer and scheduler fit together. Only the fields the app
/// uses are declared; the others are ignored when decoding.
public struct Manifest: Decodable, Equatable {
    // Explicit keys, not .convertFromSnakeCase: that strategy also rewrites the keys of
    // free-form dictionaries (profile's "compute_units" would become "computeUnits").
    enum CodingKeys: String, CodingKey {
        case schemaVersion = "schema_version", name, createdUTC = "created_utc", status
        case modelKind = "model_kind"
        case randomWeights = "random_weights", format, precision, profile, preprocessing, labels
        case pipeline, components, files, toolVersions = "tool_versions"
    }

    /// Manifests with this major version are read (3.x: explicit preprocessing and scheduler).
    public static let readableMajorVersion = "3"
    public static let fileName = "manifest.json"

    public let schemaVersion: String
    public let name: String
    /// When edgekit wrote the artifact: with the name, what identifies a compiled model cache.
    public let createdUTC: String
    /// "verified", "failed" or "structure-only" (no runtime on the exporting OS: Core ML
    /// artifacts exported on Linux are structure-only).
    public let status: ArtifactStatus
    public let modelKind: String
    public let randomWeights: Bool
    public let format: String
    public let precision: String
    public let profile: JSONValue?
    public let preprocessing: Preprocessing?
    public let labels: [String]?
    public let pipeline: PipelineInfo?
    public let components: [ComponentManifest]
    public let files: [FileEntry]
    public let toolVersions: [String: String]

    /// Decode and check a manifest. Anything malformed is one `EdgekitCoreError` naming the
    /// field, never a crash.
    public static func parse(_ data: Data) throws -> Manifest {
        let manifest: Manifest
        do {
            manifest = try JSONDecoder().decode(Manifest.self, from: data)
        } catch let error as DecodingError {
            throw EdgekitCoreError(
                "\(fileName) is not a manifest this app reads: \(describe(error)).",
                hint: "export the artifact again with `edgekit export` from this repository."
            )
        }
        let major = manifest.schemaVersion.split(separator: ".").first.map(String.init)
        guard major == readableMajorVersion else {
            throw EdgekitCoreError(
                "\(fileName) has schema_version \(manifest.schemaVersion); this app reads "
                    + "\(readableMajorVersion).x.",
                hint: "export the artifact with the edgekit version this app was built from."
            )
        }
        return manifest
    }

    public static func parse(contentsOf url: URL) throws -> Manifest {
        let data: Data
        do {
            data = try Data(contentsOf: url)
        } catch {
            throw EdgekitCoreError(
                "Cannot read \(url.path): \(error.localizedDescription).",
                hint: "an artifact folder holds manifest.json beside its model files."
            )
        }
        return try parse(data)
    }

    /// The named component, or the only one when `name` is nil.
    public func component(_ name: String? = nil) throws -> ComponentManifest {
        if name == nil, components.count == 1 { return components[0] }
        if let found = components.first(where: { $0.name == name }) { return found }
        let known = components.map(\.name).joined(separator: ", ")
        throw EdgekitCoreError(
            "Artifact \(self.name) has no component '\(name ?? "(unnamed)")'; it has: \(known).",
            hint: "pass one of those names."
        )
    }

    /// sha256 of a component's model file as the manifest lists it, the key that links a device
    /// row to the host rows of the same artifact. nil where the model is a folder (an
    /// .mlpackage lists the files inside it), exactly as `edgekit bench` records it.
    public func modelFileSHA256(of component: ComponentManifest) -> String? {
        files.first(where: { $0.path == component.modelFile })?.sha256
    }

    /// Bytes of a component's model file(s): every listed file under its path.
    public func modelSizeBytes(of component: ComponentManifest) -> Int {
        files.filter { $0.path.hasPrefix(component.modelFile) }.reduce(0) { $0 + $1.sizeBytes }
    }

    /// The profile's `runtime.<key>` setting as text (e.g. compute_units "ALL"), if any.
    public func runtimeSetting(_ key: String) -> String? {
        profile?["runtime"]?[key]?.stringValue
    }

    static func describe(_ error: DecodingError) -> String {
        func path(_ codingPath: [CodingKey]) -> String {
            let parts = codingPath.map { key in key.intValue.map { "[\($0)]" } ?? key.stringValue }
            return parts.isEmpty ? "(top level)" : parts.joined(separator: ".")
        }
        switch error {
        case .keyNotFound(let key, let context):
            return "missing field \(path(context.codingPath + [key]))"
        case .typeMismatch(_, let context), .valueNotFound(_, let context):
            return "\(path(context.codingPath)): \(context.debugDescription)"
        case .dataCorrupted(let context):
            return "\(path(context.codingPath)): \(context.debugDescription)"
        @unknown default:
            return "\(error)"
        }
    }
}

public enum ArtifactStatus: String, Decodable, Equatable {
    case verified
    case failed
    case structureOnly = "structure-only"
}

public struct FileEntry: Decodable, Equatable {
    enum CodingKeys: String, CodingKey { case path, sizeBytes = "size_bytes", sha256 }
    public let path: String
    public let sizeBytes: Int
    public let sha256: String
}

/// One named input or output: static shape and dtype in numpy spelling ("float32", "int32").
public struct TensorSpec: Decodable, Equatable {
    public let name: String
    public let shape: [Int]
    public let dtype: String
    /// [low, high] of the seeded inputs edgekit verified and benchmarked with, when recorded.
    public let valueRange: [Double]?

    enum CodingKeys: String, CodingKey {
        case name, shape, dtype, valueRange = "value_range"
    }

    public var elementCount: Int { shape.reduce(1, *) }
}

/// How close the component came to PyTorch at export time.
public struct Verification: Decodable, Equatable {
    enum CodingKeys: String, CodingKey {
        case status, numericsChecked = "numerics_checked", runtime, precision, message, outputs
    }

    /// "passed", "failed" or "not-checked".
    public let status: String
    public let numericsChecked: Bool
    public let runtime: String
    public let precision: String
    public let message: String
    public let outputs: [OutputComparison]

    public struct OutputComparison: Decodable, Equatable {
        enum CodingKeys: String, CodingKey {
            case name, sqnrDb = "sqnr_db", top1Agreement = "top1_agreement"
        }

        public let name: String
        public let sqnrDb: Double?
        public let top1Agreement: Double?
    }

    /// The bench report's spelling of the status (edgekit.validate.ARTIFACT_STATUS).
    public var artifactStatus: String {
        switch status {
        case "passed": return "verified"
        case "not-checked": return "structure-only"
        default: return status
        }
    }
}

public struct ComponentManifest: Decodable, Equatable {
    enum CodingKeys: String, CodingKey {
        case name, modelKind = "model_kind", modelFile = "model_file", inputs, outputs
        case parameterCount = "parameter_count", verification, sizeBytes = "size_bytes"
    }

    /// "model" for a classifier; "text-encoder", "unet", "vae-decoder" in a pipeline.
    public let name: String
    public let modelKind: String
    /// Relative to the artifact folder (a folder itself for an .mlpackage).
    public let modelFile: String
    public let inputs: [TensorSpec]
    public let outputs: [TensorSpec]
    public let parameterCount: Int
    public let verification: Verification
    public let sizeBytes: Int?

    public func input(_ name: String) throws -> TensorSpec {
        try Self.spec(name, in: inputs, kind: "input", component: self.name)
    }

    public func output(_ name: String) throws -> TensorSpec {
        try Self.spec(name, in: outputs, kind: "output", component: self.name)
    }

    private static func spec(
        _ name: String, in specs: [TensorSpec], kind: String, component: String
    ) throws -> TensorSpec {
        if let found = specs.first(where: { $0.name == name }) { return found }
        let known = specs.map(\.name).joined(separator: ", ")
        throw EdgekitCoreError(
            "Component '\(component)' has no \(kind) '\(name)'; it has: \(known).",
            hint: "export the artifact with edgekit; its tensor names are fixed per model kind."
        )
    }
}

/// Stable Diffusion: how the components, tokenizer and scheduler fit together.
public struct PipelineInfo: Decodable, Equatable {
    enum CodingKeys: String, CodingKey {
        case vaeScalingFactor = "vae_scaling_factor", vaeScaleFactor = "vae_scale_factor"
        case latentChannels = "latent_channels", latentHeight = "latent_height"
        case latentWidth = "latent_width", imageHeight = "image_height"
        case imageWidth = "image_width", textMaxLength = "text_max_length"
        case unetBatch = "unet_batch", tokenizerFiles = "tokenizer_files", scheduler
    }

    /// Latents are divided by this before the VAE decoder.
    public let vaeScalingFactor: Double
    public let vaeScaleFactor: Int
    public let latentChannels: Int
    public let latentHeight: Int
    public let latentWidth: Int
    public let imageHeight: Int
    public let imageWidth: Int
    public let textMaxLength: Int
    /// 1: guidance calls the UNet twice per step (unconditional, then conditional); 2: once,
    /// unconditional first in the batch.
    public let unetBatch: Int
    public let tokenizerFiles: [String]
    public let scheduler: SchedulerSpec
}
