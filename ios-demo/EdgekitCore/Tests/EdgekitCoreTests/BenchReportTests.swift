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

    func testWindowsThatDisagreeMakeARowUnreliable() throws {
        let samples = [Double](repeating: 10, count: 20)
        let stats = try BenchStats.of(samples)
        // A phone that throttles: the last window is 40% slower than the first.
        let reasons = stats.unreliableReasons(samplesMs: samples, roundMediansMs: [10, 11, 14])
        XCTAssertEqual(reasons, ["rounds disagree by 36%"])
    }

    /// A device report for the contract's manifest: the fields edgekit's schema requires, the
    /// row identity edgekit gives the same artifact, and valid JSON. Set
    /// EDGEKIT_BENCH_REPORT_OUT to keep the file, e.g. for `edgekit bench ingest` to validate it
    /// against edgekit/schemas/bench.schema.json (CI does on macOS).
    func testDeviceReportCarriesTheSchemaAndTheArtifactsIdentity() throws {
        let manifest = try Manifest.parse(Contract.data("manifest.json"))
        let component = try manifest.component()
        let samples = (0..<30).map { 12.0 + Double($0 % 7) * 0.25 }
        let measurement = DeviceMeasurement(
            computeUnits: "cpuAndNeuralEngine", runtimeVersion: "iOS 17.4", loadMs: 85,
            firstInferenceMs: 40, warmupRuns: 5, samplesMs: samples,
            roundMediansMs: [12.5, 12.75], memoryIncreaseBytes: 12_345_678,
            settings: ["thermal_state_start": .string("nominal")]
        )
        let row = try BenchReportWriter.result(
            manifest: manifest, component: component, artifactPath: "Models/\(manifest.name)",
            measurement: measurement
        )
        let machine = BenchReport.Machine(
            os: "iOS 17.4", platform: "iOS-17.4-arm64-iPhone15,2", processor: "arm64",
            cpuCount: 6, cpuFlags: ["FEAT_DotProd"], device: "iPhone15,2"
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
        XCTAssertEqual(json["schema_version"] as? String, "2.0")
        XCTAssertEqual(json["created_utc"] as? String, "1970-01-01T00:00:00+00:00")
        let results = try XCTUnwrap(json["results"] as? [[String: Any]])
        let written = try XCTUnwrap(results.first)
        XCTAssertEqual(written["source"] as? String, "device")
        XCTAssertEqual(written["name"] as? String, manifest.name)
        XCTAssertEqual(written["artifact_sha256"] as? String, manifest.files.first?.sha256)
        XCTAssertEqual(written["fp32_weight_bytes"] as? Int, component.parameterCount * 4)
        let runtime = try XCTUnwrap(written["runtime"] as? [String: Any])
        XCTAssertEqual(runtime["delegate"] as? String, "cpuAndNeuralEngine")
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
