import Foundation
import XCTest

@testable import EdgekitCore

/// Real photos (scikit-image, matplotlib sample data) -> the exact tensors
/// edgekit.preprocess.preprocess_rgb makes, for every Pillow filter the manifests may name.
final class PreprocessorTests: XCTestCase {
    struct Cases: Decodable {
        let cases: [Case]
    }

    struct Case: Decodable {
        let name: String
        let rgb: String
        let height: Int
        let width: Int
        let preprocessing: Preprocessing
        let input: String
        let shape: [Int]
    }

    private func cases() throws -> [Case] {
        try Contract.decode(Cases.self, "preprocess/cases.json").cases
    }

    func testEveryCaseGivesEdgekitsTensor() throws {
        for testCase in try cases() {
            let pixels = try Contract.uint8("preprocess/\(testCase.rgb)")
            let tensor = try Preprocessor(testCase.preprocessing)
                .run(rgb: pixels, height: testCase.height, width: testCase.width)
            XCTAssertEqual(tensor.shape, testCase.shape, testCase.name)
            let expected = try Contract.float32("preprocess/\(testCase.input)")
            Contract.assertClose(tensor.data, expected, testCase.name)
        }
    }

    func testTheCasesCoverEveryFilter() throws {
        let filters = Set(try cases().map(\.preprocessing.interpolation))
        XCTAssertEqual(filters, Set(Resample.Filter.allCases))
    }

    func testRefusesPixelsThatDoNotFillTheImage() throws {
        let preprocessing = try XCTUnwrap(try cases().first).preprocessing
        XCTAssertThrowsError(
            try Preprocessor(preprocessing).run(rgb: [0, 0, 0], height: 2, width: 2)
        ) { error in
            XCTAssertTrue("\(error)".contains("needs 12 RGB bytes; got 3"), "\(error)")
        }
    }

    func testFloorDivisionMatchesPython() {
        XCTAssertEqual(Preprocessor.floorDiv(-7, 2), -4)
        XCTAssertEqual(Preprocessor.floorDiv(7, 2), 3)
        XCTAssertEqual(Preprocessor.floorDiv(-6, 2), -3)
    }
}
