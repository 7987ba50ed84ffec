import Foundation
import XCTest

@testable import EdgekitCore

final class DdimSchedulerTests: XCTestCase {
    struct Cases: Decodable {
        let specs: [String: SchedulerSpec]
        let timesteps: [TimestepCase]
        let steps: [StepCase]
        let guidance: [GuidanceCase]
    }

    struct TimestepCase: Decodable {
        let spec: String
        let steps: Int
        let timesteps: [Int]
    }

    struct StepCase: Decodable {
        let name: String
        let spec: String
        let steps: Int
        let timestep: Int
        let sample: String
        let modelOutput: String
        let prevSample: String

        enum CodingKeys: String, CodingKey {
            case name, spec, steps, timestep, sample, modelOutput = "model_output"
            case prevSample = "prev_sample"
        }
    }

    struct GuidanceCase: Decodable {
        let name: String
        let scale: Double
        let uncond: String
        let cond: String
        let guided: String
    }

    private func cases() throws -> Cases {
        try Contract.decode(Cases.self, "scheduler/cases.json")
    }

    func testTimestepsMatchEdgekit() throws {
        let contract = try cases()
        for testCase in contract.timesteps {
            let spec = try XCTUnwrap(contract.specs[testCase.spec])
            XCTAssertEqual(
                try DdimScheduler.timesteps(spec, steps: testCase.steps), testCase.timesteps,
                "\(testCase.spec) with \(testCase.steps) steps"
            )
        }
    }

    func testOneDenoisingUpdateMatchesEdgekit() throws {
        let contract = try cases()
        for testCase in contract.steps {
            let scheduler = try DdimScheduler(XCTUnwrap(contract.specs[testCase.spec]))
            let timesteps = try scheduler.setTimesteps(testCase.steps)
            XCTAssertTrue(timesteps.contains(testCase.timestep), testCase.name)
            let previous = scheduler.step(
                modelOutput: try Contract.float32("scheduler/\(testCase.modelOutput)"),
                timestep: testCase.timestep,
                sample: try Contract.float32("scheduler/\(testCase.sample)")
            )
            Contract.assertClose(
                previous, try Contract.float32("scheduler/\(testCase.prevSample)"), testCase.name
            )
        }
    }

    func testGuidanceMatchesEdgekit() throws {
        for testCase in try cases().guidance {
            let guided = classifierFreeGuidance(
                uncond: try Contract.float32("scheduler/\(testCase.uncond)"),
                cond: try Contract.float32("scheduler/\(testCase.cond)"),
                scale: testCase.scale
            )
            Contract.assertClose(
                guided, try Contract.float32("scheduler/\(testCase.guided)"), testCase.name
            )
        }
    }

    func testRefusesStepCountsOutsideTheSchedule() throws {
        let spec = try XCTUnwrap(try cases().specs["sd15"])
        for steps in [0, spec.numTrainTimesteps + 1] {
            XCTAssertThrowsError(try DdimScheduler.timesteps(spec, steps: steps)) { error in
                XCTAssertTrue("\(error)".contains("\(steps) steps are not allowed"), "\(error)")
            }
        }
    }
}
