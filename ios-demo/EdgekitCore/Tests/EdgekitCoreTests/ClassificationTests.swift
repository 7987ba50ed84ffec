import Foundation
import XCTest

@testable import EdgekitCore

final class ClassificationTests: XCTestCase {
    struct Cases: Decodable {
        let labels: [String]
        let cases: [Case]
    }

    struct Case: Decodable {
        let name: String
        let logits: [Float]
        let k: Int
        let probabilities: [Double]
        let expected: [Expected]
    }

    struct Expected: Decodable {
        let index: Int
        let label: String
        let probability: Double
    }

    func testTopKMatchesEdgekit() throws {
        let contract = try Contract.decode(Cases.self, "classify/cases.json")
        for testCase in contract.cases {
            let probabilities = softmax(testCase.logits)
            for (index, probability) in probabilities.enumerated() {
                Contract.assertClose(
                    probability, testCase.probabilities[index], "\(testCase.name) p[\(index)]"
                )
            }
            let top = try topK(logits: testCase.logits, labels: contract.labels, k: testCase.k)
            // Ties keep index order, so the indices must match exactly.
            XCTAssertEqual(top.map(\.index), testCase.expected.map(\.index), testCase.name)
            XCTAssertEqual(top.map(\.label), testCase.expected.map(\.label), testCase.name)
            for (got, want) in zip(top, testCase.expected) {
                Contract.assertClose(got.probability, want.probability, testCase.name)
            }
        }
    }

    func testRefusesLabelsThatDoNotMatchTheLogits() {
        XCTAssertThrowsError(try topK(logits: [1, 2, 3], labels: ["a", "b"], k: 1)) { error in
            XCTAssertTrue("\(error)".contains("3 logits but the manifest lists 2"), "\(error)")
        }
    }
}
