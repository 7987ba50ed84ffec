import CoreML
import EdgekitCore
import Foundation

/// What to benchmark and how. From the Benchmark tab, or from launch arguments (UserDefaults'
/// argument domain), so a Mac can start it on a phone:
///   xcrun devicectl device process launch --device UDID dev.edgekit.EdgekitDemo \
///     -benchmark tiny-mobilevit-coreml-fp16 -computeUnits all,cpuOnly -runs 100 \
///     -sustainedMinutes 0 -windowSeconds 30
struct BenchmarkRequest {
    var artifactName: String
    var computeUnits: [ComputeUnits] = ComputeUnits.allCases
    /// Timed runs after warm-up (at least), as `edgekit bench --runs`.
    var runs = 100
    var warmupRuns = 5
    /// Stop a slow model early once 10 runs are done (edgekit's max_time_s).
    var maxSeconds = 30.0
    /// Sustained mode: keep running this long, one median per window, so throttling shows.
    var sustainedMinutes = 0.0
    var windowSeconds = 30.0
    /// Denoising steps assumed for a pipeline's estimated image time.
    var pipelineSteps = 20

    var isSustained: Bool { sustainedMinutes > 0 }

    static func fromLaunchArguments(_ defaults: UserDefaults = .standard) -> BenchmarkRequest? {
        guard let name = defaults.string(forKey: "benchmark") else { return nil }
        var request = BenchmarkRequest(artifactName: name)
        if let units = defaults.string(forKey: "computeUnits") {
            request.computeUnits = units.split(separator: ",").compactMap {
                ComputeUnits(rawValue: String($0))
            }
        }
        if defaults.object(forKey: "runs") != nil { request.runs = defaults.integer(forKey: "runs") }
        if defaults.object(forKey: "warmup") != nil {
            request.warmupRuns = defaults.integer(forKey: "warmup")
        }
        if defaults.object(forKey: "sustainedMinutes") != nil {
            request.sustainedMinutes = defaults.double(forKey: "sustainedMinutes")
        }
        if defaults.object(forKey: "windowSeconds") != nil {
            request.windowSeconds = defaults.double(forKey: "windowSeconds")
        }
        return request
    }
}

/// Times every component of an artifact on every requested set of compute units and writes
/// one bench report (schema 2.1, `source: "device"`) to Documents/bench/, where
/// `xcrun devicectl device copy from` or the Files app picks it up for `edgekit bench ingest`.
struct BenchmarkRunner {
    static let reportFolder = "bench"
    let request: BenchmarkRequest

    /// Runs off the main actor (a nonisolated async function); `status` reports progress.
    func run(_ artifact: Artifact, status: @escaping (String) -> Void) async throws -> URL {
        let manifest = artifact.manifest
        let thermalStart = DeviceInfo.thermalState
        var rows: [BenchReport.Result] = []
        var warnings: [String] = []
        var pipelines: [BenchReport.Pipeline] = []
        for units in request.computeUnits {
            var medians: [String: Double] = [:]
            for component in manifest.components {
                status("\(component.name) on \(units.rawValue)…")
                let row = await measure(artifact, component, units)
                if let median = row.latency?.medianMs { medians[component.name] = median }
                rows.append(row)
            }
            if let info = manifest.pipeline, medians.count == manifest.components.count,
                medians["unet"] != nil
            {
                var pipeline = BenchReport.Pipeline(
                    artifact: artifact.folder.path, format: manifest.format,
                    steps: request.pipelineSteps, unetCallsPerStep: info.unetBatch == 2 ? 1 : 2,
                    componentMedianMs: medians, measuredImageS: [], coldLoadS: nil
                )
                pipeline.artifactSHA256 = rows.last(where: { $0.component == "unet" })?.artifactSHA256
                pipelines.append(pipeline)
            }
        }
        let thermalEnd = DeviceInfo.thermalState
        let windowStates = rows.flatMap { $0.sustained?.thermalStates ?? [] }
        let seen = Set([thermalStart, thermalEnd] + windowStates)
        for state in ["serious", "critical"] where seen.contains(state) {
            warnings.append(
                "The phone's thermal state reached '\(state)' during the run: it throttles there, "
                    + "so later samples are slower than a cool phone's."
            )
        }
        let report = BenchReportWriter.report(
            machine: DeviceInfo.machine(
                thermalStateStart: thermalStart, thermalStateEnd: thermalEnd
            ),
            results: rows, pipelines: pipelines, settings: settings(), warnings: warnings,
            notes: Self.notes
        )
        let stamp = BenchReportWriter.utcTimestamp(Date()).filter { $0.isNumber }
        let url = ArtifactLibrary.documentsFolder
            .appendingPathComponent(Self.reportFolder)
            .appendingPathComponent("\(manifest.name)-\(stamp).json")
        try BenchReportWriter.write(report, to: url)
        return url
    }

    static let notes = [
        "Core ML compiles an .mlpackage once before timing; load_ms is MLModel(contentsOf:) of "
            + "the compiled model with the row's compute units (the first load with a set of "
            + "units includes Core ML's device-specific preparation).",
        "iOS has no per-process peak RSS: memory.increase_bytes is the app's physical footprint "
            + "(task_vm_info.phys_footprint) after the timed runs minus before loading.",
        "Inputs are seeded synthetic tensors in each input's recorded value_range, as edgekit "
            + "bench uses on the host.",
        "iOS does not name its SoC: machine.soc is empty; machine.device (hw.machine) "
            + "identifies the phone and with it the chip.",
    ]

    /// What the run was asked to do; the phone's state (thermal, SoC) has schema fields of its
    /// own in `machine`, and each row's windows are in its `sustained` block.
    private func settings() -> [String: JSONValue] {
        var settings: [String: JSONValue] = [
            "mode": .string(request.isSustained ? "sustained" : "latency"),
            "compute_units": .array(request.computeUnits.map { .string($0.rawValue) }),
            "runs": .number(Double(request.runs)),
            "warmup_runs": .number(Double(request.warmupRuns)),
            "app": .string("ios-demo EdgekitDemo"),
        ]
        if request.isSustained {
            settings["sustained_s"] = .number(request.sustainedMinutes * 60)
            settings["window_s"] = .number(request.windowSeconds)
        }
        return settings
    }

    private func measure(
        _ artifact: Artifact, _ component: ComponentManifest, _ units: ComputeUnits
    ) async -> BenchReport.Result {
        let manifest = artifact.manifest
        let runtimeVersion = DeviceInfo.osDescription
        do {
            let compiled = try await ModelLoader.compiledModelURL(for: artifact, component: component)
            let inputs = try SyntheticInputs.features(for: component)
            let footprintBefore = DeviceInfo.physicalFootprintBytes()
            let clock = ContinuousClock()
            var model: MLModel?
            let load = try clock.measure { model = try ModelLoader.load(compiled, units: units) }
            let first = try clock.measure { _ = try model!.prediction(from: inputs) }
            for _ in 0..<request.warmupRuns { _ = try model!.prediction(from: inputs) }
            let timed = try timedRuns(model!, inputs, clock)
            let footprintAfter = DeviceInfo.physicalFootprintBytes()
            var measurement = DeviceMeasurement(
                computeUnits: units.rawValue, runtimeVersion: runtimeVersion,
                loadMs: load.milliseconds, firstInferenceMs: first.milliseconds,
                warmupRuns: request.warmupRuns, samplesMs: timed.samples, sustained: timed.sustained
            )
            if let before = footprintBefore, let after = footprintAfter {
                measurement.memoryIncreaseBytes = after - before
            }
            return try BenchReportWriter.result(
                manifest: manifest, component: component, artifactPath: artifact.folder.path,
                measurement: measurement
            )
        } catch {
            return BenchReportWriter.failedResult(
                manifest: manifest, component: component, artifactPath: artifact.folder.path,
                status: "error", error: "\(error)", computeUnits: units.rawValue,
                runtimeVersion: runtimeVersion
            )
        }
    }

    /// Latency mode: until `runs` runs are done (or maxSeconds once 10 are). Sustained mode:
    /// for sustainedMinutes, one median and one thermal state per window.
    private func timedRuns(
        _ model: MLModel, _ inputs: MLFeatureProvider, _ clock: ContinuousClock
    ) throws -> (samples: [Double], sustained: BenchReport.SustainedRun?) {
        var samples: [Double] = []
        let started = clock.now
        if !request.isSustained {
            while samples.count < request.runs {
                if samples.count >= BenchStats.minRunsForP90
                    && (clock.now - started).milliseconds > request.maxSeconds * 1000
                {
                    break
                }
                samples.append(try clock.measure { _ = try model.prediction(from: inputs) }.milliseconds)
            }
            return (samples, nil)
        }
        var windowMedians: [Double] = []
        var thermalStates: [String] = []
        let totalMs = request.sustainedMinutes * 60_000
        while (clock.now - started).milliseconds < totalMs {
            var window: [Double] = []
            let windowStart = clock.now
            while (clock.now - windowStart).milliseconds < request.windowSeconds * 1000 {
                window.append(try clock.measure { _ = try model.prediction(from: inputs) }.milliseconds)
            }
            samples += window
            windowMedians.append(try BenchStats.of(window).medianMs)
            thermalStates.append(DeviceInfo.thermalState)
        }
        let sustained = BenchReport.SustainedRun(
            durationS: (clock.now - started).milliseconds / 1000, windowS: request.windowSeconds,
            windowMediansMs: windowMedians, thermalStates: thermalStates
        )
        return (samples, sustained)
    }
}

/// Seeded inputs shaped as the manifest says, within each input's recorded value range.
enum SyntheticInputs {
    static func features(for component: ComponentManifest, seed: UInt64 = 0) throws
        -> MLFeatureProvider
    {
        var generator = SplitMix64(seed: seed)
        var features: [String: MLMultiArray] = [:]
        for spec in component.inputs {
            let low = spec.valueRange?.first ?? 0
            let high = spec.valueRange?.last ?? 1
            let uniform = (0..<spec.elementCount).map { _ in
                low + (high - low) * Double(generator.next() >> 11) / 9_007_199_254_740_992
            }
            features[spec.name] = spec.dtype == "int32"
                ? try Tensors.int32(uniform.map { Int32($0.rounded(.down)) }, spec)
                : try Tensors.float32(uniform.map(Float.init), spec)
        }
        return try MLDictionaryFeatureProvider(dictionary: features)
    }
}
