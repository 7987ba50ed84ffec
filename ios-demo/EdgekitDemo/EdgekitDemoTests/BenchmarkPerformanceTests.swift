import CoreML
import EdgekitCore
import XCTest

@testable import EdgekitDemo

/// Benchmark mode as XCTest performance tests: every Core ML artifact in the app's Models
/// folder, on every set of compute units, timed by XCTest (XCTClockMetric, XCTMemoryMetric),
/// and the same runs written as an edgekit bench report (schema 2.1) into the test's
/// Documents/bench folder. Run on a device:
///   xcodebuild test -project EdgekitDemo.xcodeproj -scheme EdgekitDemo \
///     -destination 'platform=iOS,id=UDID' -only-testing:EdgekitDemoTests
/// With no artifact installed the tests skip and say why.
@MainActor
final class BenchmarkPerformanceTests: XCTestCase {
    private func installedArtifacts() async throws -> [Artifact] {
        let library = ArtifactLibrary()
        await library.reload()
        if library.artifacts.isEmpty {
            throw XCTSkip(
                "No Core ML artifact in EdgekitDemo/Models: run `edgekit install ARTIFACT "
                    + "--app ios-demo` and build again."
            )
        }
        return library.artifacts
    }

    func testLatencyOfEveryComponentOnEveryComputeUnit() async throws {
        for artifact in try await installedArtifacts() {
            for component in artifact.manifest.components {
                let compiled = try await ModelLoader.compiledModelURL(
                    for: artifact, component: component
                )
                let inputs = try SyntheticInputs.features(for: component)
                for units in ComputeUnits.allCases {
                    let model = try ModelLoader.load(compiled, units: units)
                    _ = try model.prediction(from: inputs)  // first run outside the timing
                    let options = XCTMeasureOptions()
                    options.iterationCount = 10
                    measure(metrics: [XCTClockMetric(), XCTMemoryMetric()], options: options) {
                        _ = try? model.prediction(from: inputs)
                    }
                }
            }
        }
    }

    func testBenchmarkModeWritesAReportEdgekitReads() async throws {
        let artifact = try XCTUnwrap(try await installedArtifacts().first)
        var request = BenchmarkRequest(artifactName: artifact.name)
        request.runs = 20
        let url = try await BenchmarkRunner(request: request).run(artifact) { _ in }
        let object = try JSONSerialization.jsonObject(with: Data(contentsOf: url))
        let json = try XCTUnwrap(object as? [String: Any])
        XCTAssertEqual(json["schema_version"] as? String, BenchReport.schemaVersion)
        let results = try XCTUnwrap(json["results"] as? [[String: Any]])
        XCTAssertEqual(
            results.count, artifact.manifest.components.count * ComputeUnits.allCases.count
        )
        let failed = results.filter { $0["status"] as? String != "ok" }
        XCTAssertTrue(failed.isEmpty, "rows that failed: \(failed.map { $0["error"] ?? "" })")
        for row in results {
            XCTAssertEqual(row["source"] as? String, "device")
            let latency = try XCTUnwrap(row["latency"] as? [String: Any])
            XCTAssertEqual(latency["runs"] as? Int, request.runs)
            let runtime = try XCTUnwrap(row["runtime"] as? [String: Any])
            XCTAssertNotNil(runtime["compute_units"] as? String)
        }
        let machine = try XCTUnwrap(json["machine"] as? [String: Any])
        let thermalStates = ["nominal", "fair", "serious", "critical"]
        XCTAssertTrue(thermalStates.contains(machine["thermal_state_start"] as? String ?? ""))
        XCTAssertTrue(thermalStates.contains(machine["thermal_state_end"] as? String ?? ""))
    }
}
