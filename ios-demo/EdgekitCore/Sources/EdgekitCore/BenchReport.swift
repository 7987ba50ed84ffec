import Foundation

/// A bench report of schema 2.1 (edgekit/bench/schema.py, edgekit/schemas/bench.schema.json),
/// the format `edgekit bench` writes on the host, so `edgekit bench ingest` merges a phone's
/// rows with the host's. Rows from the app say `source: "device"`; what a phone cannot measure
/// (FLOPs, per-op profiles, per-process RSS on iOS) is left out, as the schema allows. Key
/// names are spelled out (CodingKeys) because they are the contract with edgekit.
public struct BenchReport: Codable, Equatable {
    public static let schemaVersion = "2.1"
    /// The edgekit version this app is built with (edgekit/__init__.py's __version__; a Python
    /// test checks the two agree).
    public static let edgekitVersion = "0.1.0"
    /// What each statistic is, copied from edgekit.bench.schema.ESTIMATORS (a Python test
    /// checks every key is here).
    public static let estimators: [String: String] = [
        "median_ms": "sample median of the timed runs (all rounds pooled)",
        "median_ci95_ms": "distribution-free 95% confidence interval for the median "
            + "(order statistics at the binomial(n, 0.5) quantiles); null below 6 runs",
        "p90_ms": "90th percentile, linear interpolation between closest ranks; null below 10 runs",
        "p99_ms": "99th percentile, same method; null below 100 runs (too few samples above it)",
        "mean_ms": "arithmetic mean",
        "std_ms": "population standard deviation",
        "trimmed_mean_ms": "mean of the middle 80% (10% trimmed from each end)",
        "cv": "coefficient of variation, std / mean (reliability uses the CV of the middle 80%)",
        "throughput_per_s": "batch x 1000 / median_ms: images (or samples) per second, one stream",
        "speedup_vs_pytorch": "PyTorch eager median / this median, median of per-round ratios",
        "gflops_per_s": "model FLOPs (torch.utils.flop_counter on the PyTorch reference) / median",
    ]

    public var schemaVersion = BenchReport.schemaVersion
    public var createdUTC: String
    public var edgekitVersion = BenchReport.edgekitVersion
    public var machine: Machine
    public var settings: [String: JSONValue]
    public var estimators = BenchReport.estimators
    public var results: [Result]
    public var pipelines: [Pipeline]
    public var warnings: [String]
    public var notes: [String]

    enum CodingKeys: String, CodingKey {
        case schemaVersion = "schema_version", createdUTC = "created_utc"
        case edgekitVersion = "edgekit_version", machine, settings, estimators, results
        case pipelines, warnings, notes
    }

    public struct Machine: Codable, Equatable {
        public var hostname: String?
        /// "iOS 17.4.1".
        public var os: String?
        /// "iOS-17.4.1-arm64-iPhone15,2": one string a reader can match on.
        public var platform: String
        /// The SoC as far as the OS tells it ("arm64, Apple iPhone15,2 SoC").
        public var processor: String
        public var cpuCount: Int?
        /// ISA extensions that change kernels (hw.optional.arm.FEAT_* on Apple chips).
        public var cpuFlags: [String]
        /// The phone model (hw.machine, e.g. "iPhone15,2"); "host" for host runs.
        public var device: String
        /// The system on chip by name, where the platform tells it (iOS does not: nil).
        public var soc: String?
        /// The platform's thermal state when the run started and when it ended, by the
        /// platform's names (ProcessInfo.thermalState: nominal, fair, serious, critical).
        public var thermalStateStart: String?
        public var thermalStateEnd: String?

        public init(
            os: String?, platform: String, processor: String, cpuCount: Int?,
            cpuFlags: [String], device: String, soc: String? = nil,
            thermalStateStart: String? = nil, thermalStateEnd: String? = nil
        ) {
            self.os = os
            self.platform = platform
            self.processor = processor
            self.cpuCount = cpuCount
            self.cpuFlags = cpuFlags
            self.device = device
            self.soc = soc
            self.thermalStateStart = thermalStateStart
            self.thermalStateEnd = thermalStateEnd
        }

        enum CodingKeys: String, CodingKey {
            case hostname, os, platform, processor, cpuCount = "cpu_count"
            case cpuFlags = "cpu_flags", device, soc
            case thermalStateStart = "thermal_state_start", thermalStateEnd = "thermal_state_end"
        }
    }

    public struct Runtime: Codable, Equatable {
        /// "coreml".
        public var name: String
        /// The OS version: Core ML ships with it.
        public var version: String
        public var threads: Int?
        /// The compute units again: edgekit keys rows by delegate, so rows with different
        /// units stay apart in `bench compare` and the report folder.
        public var delegate: String?
        /// The compute units the model was loaded with ("cpuAndNeuralEngine").
        public var computeUnits: String?
        public var settings: [String: JSONValue]

        public init(
            name: String, version: String, delegate: String?, computeUnits: String? = nil,
            settings: [String: JSONValue]
        ) {
            self.name = name
            self.version = version
            self.delegate = delegate
            self.computeUnits = computeUnits
            self.settings = settings
        }

        enum CodingKeys: String, CodingKey {
            case name, version, threads, delegate, computeUnits = "compute_units", settings
        }
    }

    public struct Latency: Codable, Equatable {
        public var runs: Int
        public var medianMs: Double
        public var medianCI95Ms: [Double]?
        public var p90Ms: Double?
        public var p99Ms: Double?
        public var meanMs: Double
        public var stdMs: Double
        public var trimmedMeanMs: Double?
        public var cv: Double?
        public var minMs: Double
        public var maxMs: Double

        public init(_ stats: BenchStats) {
            runs = stats.runs
            medianMs = stats.medianMs
            medianCI95Ms = stats.medianCI95Ms.map { [$0.low, $0.high] }
            p90Ms = stats.p90Ms
            p99Ms = stats.p99Ms
            meanMs = stats.meanMs
            stdMs = stats.stdMs
            trimmedMeanMs = stats.trimmedMeanMs
            cv = stats.cv
            minMs = stats.minMs
            maxMs = stats.maxMs
        }

        enum CodingKeys: String, CodingKey {
            case runs, medianMs = "median_ms", medianCI95Ms = "median_ci95_ms", p90Ms = "p90_ms"
            case p99Ms = "p99_ms", meanMs = "mean_ms", stdMs = "std_ms"
            case trimmedMeanMs = "trimmed_mean_ms", cv, minMs = "min_ms", maxMs = "max_ms"
        }
    }

    public struct Memory: Codable, Equatable {
        /// Physical footprint after loading and running minus before loading (iOS has no
        /// per-process peak RSS; the footprint is what the OS's memory limit counts).
        public var increaseBytes: Int?
        public var peakRSSBytes: Int?
        public var rssAfterImportsBytes: Int?

        public init(increaseBytes: Int?, peakRSSBytes: Int?, rssAfterImportsBytes: Int?) {
            self.increaseBytes = increaseBytes
            self.peakRSSBytes = peakRSSBytes
            self.rssAfterImportsBytes = rssAfterImportsBytes
        }

        enum CodingKeys: String, CodingKey {
            case increaseBytes = "increase_bytes", peakRSSBytes = "peak_rss_bytes"
            case rssAfterImportsBytes = "rss_after_imports_bytes"
        }
    }

    public struct Fidelity: Codable, Equatable {
        public var verificationStatus: String?
        public var worstSQNRDb: Double?
        public var top1Agreement: Double?

        enum CodingKeys: String, CodingKey {
            case verificationStatus = "verification_status", worstSQNRDb = "worst_sqnr_db"
            case top1Agreement = "top1_agreement"
        }
    }

    public struct Reliability: Codable, Equatable {
        public var reliable: Bool
        public var reasons: [String]
    }

    /// A run repeated for minutes so thermal throttling shows: one median per window. The
    /// windows are consecutive, not interleaved rounds, so their drift is reported as
    /// `slowdown` and never as rounds that disagree.
    public struct SustainedRun: Codable, Equatable {
        public var durationS: Double
        public var windowS: Double
        public var windowMediansMs: [Double]
        /// The thermal state at the end of each window.
        public var thermalStates: [String]
        /// Last window's median / first window's: above 1 it slowed down. Nil below two
        /// windows, where there is nothing to compare.
        public var slowdown: Double?

        public init(
            durationS: Double, windowS: Double, windowMediansMs: [Double],
            thermalStates: [String] = []
        ) {
            self.durationS = durationS
            self.windowS = windowS
            self.windowMediansMs = windowMediansMs
            self.thermalStates = thermalStates
            slowdown = Self.lastOverFirst(windowMediansMs)
        }

        public static func lastOverFirst(_ windowMediansMs: [Double]) -> Double? {
            guard windowMediansMs.count >= 2, let first = windowMediansMs.first, first > 0,
                let last = windowMediansMs.last
            else { return nil }
            return last / first
        }

        enum CodingKeys: String, CodingKey {
            case durationS = "duration_s", windowS = "window_s"
            case windowMediansMs = "window_medians_ms", thermalStates = "thermal_states", slowdown
        }
    }

    public struct Result: Codable, Equatable {
        public var name: String
        /// "ok", "error", "crashed" or "timed-out".
        public var status: String
        public var error: String?
        public var source = "device"
        public var format: String
        public var component: String
        public var modelKind: String
        public var precision: String
        public var artifact: String?
        public var artifactSHA256: String?
        public var randomWeights: Bool
        public var modelSizeBytes: Int
        public var fp32WeightBytes: Int?
        public var threads: Int?
        public var batch: Int
        public var runtime: Runtime
        public var loadMs: Double?
        public var firstInferenceMs: Double?
        public var warmupRuns: Int?
        public var latency: Latency?
        public var throughputPerS: Double?
        public var roundMediansMs: [Double]
        public var sustained: SustainedRun?
        public var samplesMs: [Double]
        public var samplesTotal: Int?
        public var memory: Memory?
        public var fidelity: Fidelity
        public var reliability: Reliability

        enum CodingKeys: String, CodingKey {
            case name, status, error, source, format, component, modelKind = "model_kind"
            case precision, artifact, artifactSHA256 = "artifact_sha256"
            case randomWeights = "random_weights", modelSizeBytes = "model_size_bytes"
            case fp32WeightBytes = "fp32_weight_bytes", threads, batch, runtime
            case loadMs = "load_ms", firstInferenceMs = "first_inference_ms"
            case warmupRuns = "warmup_runs", latency, throughputPerS = "throughput_per_s"
            case roundMediansMs = "round_medians_ms", sustained, samplesMs = "samples_ms"
            case samplesTotal = "samples_total", memory, fidelity, reliability
        }
    }

    /// Stable Diffusion: one image = text encoder + UNet x steps x calls + VAE decoder.
    public struct Pipeline: Codable, Equatable {
        public var artifact: String
        public var artifactSHA256: String?
        public var format: String
        public var threads: Int?
        public var steps: Int
        public var unetCallsPerStep: Int
        public var componentMedianMs: [String: Double]
        public var estimatedImageS: Double
        public var measuredImageS: [Double]
        public var coldLoadS: Double?

        public init(
            artifact: String, format: String, steps: Int, unetCallsPerStep: Int,
            componentMedianMs: [String: Double], measuredImageS: [Double], coldLoadS: Double?
        ) {
            self.artifact = artifact
            self.format = format
            self.steps = steps
            self.unetCallsPerStep = unetCallsPerStep
            self.componentMedianMs = componentMedianMs
            self.measuredImageS = measuredImageS
            self.coldLoadS = coldLoadS
            let unet = (componentMedianMs["unet"] ?? 0) * Double(steps * unetCallsPerStep)
            let others = componentMedianMs.filter { $0.key != "unet" }.values.reduce(0, +)
            estimatedImageS = (unet + others) / 1000
        }

        enum CodingKeys: String, CodingKey {
            case artifact, artifactSHA256 = "artifact_sha256", format, threads, steps
            case unetCallsPerStep = "unet_calls_per_step", componentMedianMs = "component_median_ms"
            case estimatedImageS = "estimated_image_s", measuredImageS = "measured_image_s"
            case coldLoadS = "cold_load_s"
        }
    }
}

/// What one benchmark of one component on one set of compute units measured on the device.
public struct DeviceMeasurement {
    public var computeUnits: String
    public var runtimeVersion: String
    public var loadMs: Double
    public var firstInferenceMs: Double
    public var warmupRuns: Int
    public var samplesMs: [Double]
    /// Median of each interleaved round, when there were rounds (sustained windows are not).
    public var roundMediansMs: [Double]
    /// Sustained mode: the windows' medians and thermal states.
    public var sustained: BenchReport.SustainedRun?
    public var memoryIncreaseBytes: Int?
    /// Runtime settings the schema has no field for.
    public var settings: [String: JSONValue]

    public init(
        computeUnits: String, runtimeVersion: String, loadMs: Double, firstInferenceMs: Double,
        warmupRuns: Int, samplesMs: [Double], roundMediansMs: [Double] = [],
        sustained: BenchReport.SustainedRun? = nil, memoryIncreaseBytes: Int? = nil,
        settings: [String: JSONValue] = [:]
    ) {
        self.computeUnits = computeUnits
        self.runtimeVersion = runtimeVersion
        self.loadMs = loadMs
        self.firstInferenceMs = firstInferenceMs
        self.warmupRuns = warmupRuns
        self.samplesMs = samplesMs
        self.roundMediansMs = roundMediansMs
        self.sustained = sustained
        self.memoryIncreaseBytes = memoryIncreaseBytes
        self.settings = settings
    }
}

/// Builds device rows from a manifest and measurements, and writes reports atomically.
public enum BenchReportWriter {
    /// Raw samples kept per row; more are thinned to a uniform subset (order kept).
    public static let maxKeptSamples = 1000
    public static let runtimeName = "coreml"

    /// The row's identity and artifact facts come from the manifest exactly as `edgekit bench`
    /// takes them, so `bench ingest` puts this row beside the host's rows of the same artifact.
    public static func result(
        manifest: Manifest, component: ComponentManifest, artifactPath: String,
        measurement m: DeviceMeasurement
    ) throws -> BenchReport.Result {
        let stats = try BenchStats.of(m.samplesMs)
        let reasons = stats.unreliableReasons(samplesMs: m.samplesMs, roundMediansMs: m.roundMediansMs)
        var row = baseRow(manifest: manifest, component: component, artifactPath: artifactPath)
        row.runtime = BenchReport.Runtime(
            name: runtimeName, version: m.runtimeVersion, delegate: m.computeUnits,
            computeUnits: m.computeUnits, settings: m.settings
        )
        row.loadMs = m.loadMs
        row.firstInferenceMs = m.firstInferenceMs
        row.warmupRuns = m.warmupRuns
        row.latency = BenchReport.Latency(stats)
        row.throughputPerS = Double(row.batch) * 1000 / stats.medianMs
        row.roundMediansMs = m.roundMediansMs
        row.sustained = m.sustained
        row.samplesMs = reservoir(m.samplesMs)
        row.samplesTotal = m.samplesMs.count
        row.memory = m.memoryIncreaseBytes.map {
            BenchReport.Memory(increaseBytes: $0, peakRSSBytes: nil, rssAfterImportsBytes: nil)
        }
        row.reliability = BenchReport.Reliability(reliable: reasons.isEmpty, reasons: reasons)
        return row
    }

    /// A row for a component that could not be loaded or run: the error, no numbers.
    public static func failedResult(
        manifest: Manifest, component: ComponentManifest, artifactPath: String,
        status: String, error: String, computeUnits: String, runtimeVersion: String
    ) -> BenchReport.Result {
        var row = baseRow(manifest: manifest, component: component, artifactPath: artifactPath)
        row.status = status
        row.error = error
        row.runtime = BenchReport.Runtime(
            name: runtimeName, version: runtimeVersion, delegate: computeUnits,
            computeUnits: computeUnits, settings: [:]
        )
        return row
    }

    static func baseRow(
        manifest: Manifest, component: ComponentManifest, artifactPath: String
    ) -> BenchReport.Result {
        let outputs = component.verification.outputs
        return BenchReport.Result(
            name: component.name == "model" ? manifest.name : "\(manifest.name)/\(component.name)",
            status: "ok",
            format: manifest.format,
            component: component.name,
            modelKind: component.modelKind,
            precision: manifest.precision,
            artifact: artifactPath,
            artifactSHA256: manifest.modelFileSHA256(of: component),
            randomWeights: manifest.randomWeights,
            modelSizeBytes: manifest.modelSizeBytes(of: component),
            fp32WeightBytes: component.parameterCount * 4,
            // Every format edgekit writes has a fixed batch: the first input's leading axis.
            batch: component.inputs.first?.shape.first ?? 1,
            runtime: BenchReport.Runtime(name: runtimeName, version: "", delegate: nil, settings: [:]),
            roundMediansMs: [],
            samplesMs: [],
            fidelity: BenchReport.Fidelity(
                verificationStatus: component.verification.artifactStatus,
                worstSQNRDb: outputs.compactMap(\.sqnrDb).min(),
                top1Agreement: outputs.compactMap(\.top1Agreement).first
            ),
            reliability: BenchReport.Reliability(reliable: true, reasons: [])
        )
    }

    public static func report(
        machine: BenchReport.Machine, results: [BenchReport.Result],
        pipelines: [BenchReport.Pipeline] = [], settings: [String: JSONValue],
        warnings: [String] = [], notes: [String] = [], created: Date = Date()
    ) -> BenchReport {
        BenchReport(
            createdUTC: utcTimestamp(created), machine: machine, settings: settings,
            results: results, pipelines: pipelines, warnings: warnings, notes: notes
        )
    }

    /// "2026-11-27T00:27:48+00:00", the spelling edgekit's reports use.
    public static func utcTimestamp(_ date: Date) -> String {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "yyyy-MM-dd'T'HH:mm:ss'+00:00'"
        return formatter.string(from: date)
    }

    public static func encode(_ report: BenchReport) throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        do {
            return try encoder.encode(report)
        } catch {
            throw EdgekitCoreError(
                "The bench report cannot be written as JSON: \(error).",
                hint: "a latency that is not a finite number means the timer failed."
            )
        }
    }

    /// Write the report in one step: a reader never sees half a file.
    public static func write(_ report: BenchReport, to url: URL) throws {
        let data = try encode(report)
        try FileManager.default.createDirectory(
            at: url.deletingLastPathComponent(), withIntermediateDirectories: true
        )
        try data.write(to: url, options: .atomic)
    }

    /// All samples, or a uniform subset of `maxKeptSamples` of them in their order
    /// (reservoir sampling with a fixed seed, so a report is reproducible).
    static func reservoir(_ samples: [Double]) -> [Double] {
        guard samples.count > maxKeptSamples else { return samples }
        var generator = SplitMix64(seed: 0)
        var kept = Array(0..<maxKeptSamples)
        for index in maxKeptSamples..<samples.count {
            let slot = Int(generator.next() % UInt64(index + 1))
            if slot < maxKeptSamples { kept[slot] = index }
        }
        return kept.sorted().map { samples[$0] }
    }
}

/// A tiny seeded generator (Steele et al.'s SplitMix64): reproducible across platforms.
public struct SplitMix64: RandomNumberGenerator {
    private var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
