import Foundation
import XCTest

@testable import EdgekitCore

final class BenchReportTests: XCTestCase {
    struct Cases: Decodable {
        let cases: [Case]
    }

    struct Case: Decodable {
        let name: String
        let samplesMs: [Double]
        let expected: Expected
        let reliability: ReliabilityVerdict

        enum CodingKeys: String, CodingKey {
            case name, samplesMs = "samples_ms", expected, reliability
        }
    }

    struct Expected: Decodable {
        let runs: Int
        let medianMs: Double
        let medianCI95Ms: [Double]?
        let p90Ms: Double?
        let p99Ms: Double?
        let meanMs: Double
        let stdMs: Double
        let trimmedMeanMs: Double
        let cv: Double?
        let minMs: Double
        let maxMs: Double

        enum CodingKeys: String, CodingKey {
            case runs, medianMs = "median_ms", medianCI95Ms = "median_ci95_ms", p90Ms = "p90_ms"
            case p99Ms = "p99_ms", meanMs = "mean_ms", stdMs = "std_ms"
            case trimmedMeanMs = "trimmed_mean_ms", cv, minMs = "min_ms", maxMs = "max_ms"
        }
    }

    struct ReliabilityVerdict: Decodable {
        let reliable: Bool
        let reasons: [String]
    }

    func testStatisticsMatchEdgekitsTiming() throws {
        for testCase in try Contract.decode(Cases.self, "bench/samples.json").cases {
            let stats = try BenchStats.of(testCase.samplesMs)
            let want = testCase.expected
            let name = testCase.name
            XCTAssertEqual(stats.runs, want.runs, name)
            Contract.assertClose(stats.medianMs, want.medianMs, "\(name) median")
            // Order statistics: the same samples, so exactly equal.
            XCTAssertEqual(stats.medianCI95Ms.map { [$0.low, $0.high] }, want.medianCI95Ms, name)
            Contract.assertClose(stats.p90Ms, want.p90Ms, "\(name) p90")
            Contract.assertClose(stats.p99Ms, want.p99Ms, "\(name) p99")
            Contract.assertClose(stats.meanMs, want.meanMs, "\(name) mean")
            Contract.assertClose(stats.stdMs, want.stdMs, "\(name) std")
            Contract.assertClose(stats.trimmedMeanMs, want.trimmedMeanMs, "\(name) trimmed mean")
            Contract.assertClose(stats.cv, want.cv, "\(name) cv")
            XCTAssertEqual(stats.minMs, want.minMs, name)
            XCTAssertEqual(stats.maxMs, want.maxMs, name)
            let reasons = stats.unreliableReasons(samplesMs: testCase.samplesMs, roundMediansMs: [])
            XCTAssertEqual(reasons, testCase.reliability.reasons, name)
            XCTAssertEqual(reasons.isEmpty, testCase.reliability.reliable, name)
        }
    }

    func testInterleavedRoundsThatDisagreeMakeARowUnreliable() throws {
        let samples = [Double](repeating: 10, count: 20)
        let stats = try BenchStats.of(samples)
        let reasons = stats.unreliableReasons(samplesMs: samples, roundMediansMs: [10, 11, 14])
        XCTAssertEqual(reasons, ["rounds disagree by 36%"])
    }

    func testSlowdownIsLastWindowOverFirstAndNilWithOneWindow() {
        let cooler = BenchReport.SustainedRun(durationS: 60, windowS: 30, windowMediansMs: [50, 40])
        XCTAssertEqual(cooler.slowdown, 0.8)
        let single = BenchReport.SustainedRun(durationS: 30, windowS: 30, windowMediansMs: [50])
        XCTAssertNil(single.slowdown)
        XCTAssertNil(BenchReport.SustainedRun.lastOverFirst([]))
    }

    /// A device report for the contract's manifest: the fields edgekit's schema requires, the
    /// row identity edgekit gives the same artifact, and valid JSON. Set
    /// EDGEKIT_BENCH_REPORT_OUT to keep the file, e.g. for `edgekit bench ingest` to validate it
    /// against edgekit/schemas/bench.schema.json (CI does on macOS).
    func testDeviceReportCarriesTheSchemaAndTheArtifactsIdentity() throws {
        let manifest = try Manifest.parse(Contract.data("manifest.json"))
        let component = try manifest.component()
        let samples = (0..<30).map { 12.0 + Double($0 % 7) * 0.25 }
        // A phone that heats up: 30 -> 41 ms over four windows is throttling, not noise.
        let sustained = BenchReport.SustainedRun(
            durationS: 120, windowS: 30, windowMediansMs: [30, 31, 36, 41],
            thermalStates: ["nominal", "fair", "serious", "serious"]
        )
        let measurement = DeviceMeasurement(
            computeUnits: "cpuAndNeuralEngine", runtimeVersion: "iOS 17.4", loadMs: 85,
            firstInferenceMs: 40, warmupRuns: 5, samplesMs: samples, sustained: sustained,
            memoryIncreaseBytes: 12_345_678
        )
        let row = try BenchReportWriter.result(
            manifest: manifest, component: component, artifactPath: "Models/\(manifest.name)",
            measurement: measurement
        )
        let machine = BenchReport.Machine(
            os: "iOS 17.4", platform: "iOS-17.4-arm64-iPhone15,2", processor: "arm64",
            cpuCount: 6, cpuFlags: ["FEAT_DotProd"], device: "iPhone15,2",
            thermalStateStart: "nominal", thermalStateEnd: "serious"
        )
        let report = BenchReportWriter.report(
            machine: machine, results: [row], settings: ["mode": .string("latency")],
            created: Date(timeIntervalSince1970: 0)
        )
        let url = ProcessInfo.processInfo.environment["EDGEKIT_BENCH_REPORT_OUT"].map {
            URL(fileURLWithPath: $0)
        } ?? FileManager.default.temporaryDirectory.appendingPathComponent("edgekit-bench.json")
        try BenchReportWriter.write(report, to: url)

        let object = try JSONSerialization.jsonObject(with: Data(contentsOf: url))
        let json = try XCTUnwrap(object as? [String: Any])
        for field in ["created_utc", "edgekit_version", "estimators", "machine", "results",
                      "schema_version", "settings"] {
            XCTAssertNotNil(json[field], "missing \(field)")
        }
        XCTAssertEqual(json["schema_version"] as? String, "2.1")
        let writtenMachine = try XCTUnwrap(json["machine"] as? [String: Any])
        XCTAssertEqual(writtenMachine["thermal_state_start"] as? String, "nominal")
        XCTAssertEqual(writtenMachine["thermal_state_end"] as? String, "serious")
        XCTAssertNil(writtenMachine["soc"])  // iOS does not name its SoC
        // Schema 2.1 has fields for these: nothing of them in free-form settings.
        XCTAssertEqual(json["settings"] as? [String: String], ["mode": "latency"])
        XCTAssertEqual(json["created_utc"] as? String, "1970-01-01T00:00:00+00:00")
        let results = try XCTUnwrap(json["results"] as? [[String: Any]])
        let written = try XCTUnwrap(results.first)
        XCTAssertEqual(written["source"] as? String, "device")
        XCTAssertEqual(written["name"] as? String, manifest.name)
        XCTAssertEqual(written["artifact_sha256"] as? String, manifest.files.first?.sha256)
        XCTAssertEqual(written["fp32_weight_bytes"] as? Int, component.parameterCount * 4)
        let runtime = try XCTUnwrap(written["runtime"] as? [String: Any])
        XCTAssertEqual(runtime["delegate"] as? String, "cpuAndNeuralEngine")
        XCTAssertEqual(runtime["compute_units"] as? String, "cpuAndNeuralEngine")
        XCTAssertEqual((runtime["settings"] as? [String: Any])?.count, 0)
        let writtenSustained = try XCTUnwrap(written["sustained"] as? [String: Any])
        XCTAssertEqual(writtenSustained["window_medians_ms"] as? [Double], [30, 31, 36, 41])
        XCTAssertEqual(
            writtenSustained["thermal_states"] as? [String],
            ["nominal", "fair", "serious", "serious"]
        )
        XCTAssertEqual(writtenSustained["slowdown"] as? Double, 41.0 / 30.0)
        XCTAssertEqual(writtenSustained["duration_s"] as? Double, 120)
        XCTAssertEqual(writtenSustained["window_s"] as? Double, 30)
        // The windows are not rounds: no "rounds disagree" from throttling.
        XCTAssertEqual(written["round_medians_ms"] as? [Double], [])
        let reliability = try XCTUnwrap(written["reliability"] as? [String: Any])
        XCTAssertEqual(reliability["reasons"] as? [String], [])
        let latency = try XCTUnwrap(written["latency"] as? [String: Any])
        XCTAssertEqual(latency["runs"] as? Int, samples.count)
        XCTAssertEqual(written["samples_total"] as? Int, samples.count)
        XCTAssertEqual(row.throughputPerS, 1000 / (row.latency?.medianMs ?? .nan))
    }

    func testLongRunsKeepAUniformReservoirInOrder() {
        let samples = (0..<5000).map(Double.init)
        let kept = BenchReportWriter.reservoir(samples)
        XCTAssertEqual(kept.count, BenchReportWriter.maxKeptSamples)
        XCTAssertEqual(kept, kept.sorted())
        // Uniform: the kept samples come from the whole run, not its first thousand.
        XCTAssertGreaterThan(kept.last ?? 0, 4000)
    }
}
