import Foundation
import XCTest

/// The contract vectors edgekit writes (`python -m tests.contract.generate`) and its Python
/// tests check against edgekit itself: tests/contract at the repository root. Binary tensors
/// are raw little-endian float32 (.f32) or uint8 (.u8); each folder's JSON names them.
enum Contract {
    /// Tolerance for float32 tensors (the contract's; the Swift core aims at bit equality).
    static let tensorAbsoluteTolerance: Float = 1e-6
    /// Tolerance for float64 statistics and probabilities, which are computed in a different
    /// summation order than numpy's.
    static let doubleRelativeTolerance = 1e-12

    static let root: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent()  // EdgekitCoreTests
        .deletingLastPathComponent()  // Tests
        .deletingLastPathComponent()  // EdgekitCore
        .deletingLastPathComponent()  // ios-demo
        .deletingLastPathComponent()  // repository root
        .appendingPathComponent("tests")
        .appendingPathComponent("contract")

    static func url(_ relativePath: String) -> URL {
        root.appendingPathComponent(relativePath)
    }

    static func data(_ relativePath: String) throws -> Data {
        try Data(contentsOf: url(relativePath))
    }

    static func decode<T: Decodable>(_ type: T.Type, _ relativePath: String) throws -> T {
        try JSONDecoder().decode(type, from: data(relativePath))
    }

    static func float32(_ relativePath: String) throws -> [Float] {
        let bytes = try data(relativePath)
        XCTAssertEqual(bytes.count % 4, 0, "\(relativePath) is not whole float32 values")
        return bytes.withUnsafeBytes { raw in
            (0..<(bytes.count / 4)).map { index in
                let bits = raw.loadUnaligned(fromByteOffset: index * 4, as: UInt32.self)
                return Float(bitPattern: UInt32(littleEndian: bits))
            }
        }
    }

    static func uint8(_ relativePath: String) throws -> [UInt8] {
        [UInt8](try data(relativePath))
    }

    /// Fails naming the case and the first element that differs by more than the tolerance.
    static func assertClose(
        _ actual: [Float], _ expected: [Float], _ what: String,
        file: StaticString = #filePath, line: UInt = #line
    ) {
        XCTAssertEqual(actual.count, expected.count, "\(what): size", file: file, line: line)
        guard actual.count == expected.count else { return }
        for index in actual.indices where abs(actual[index] - expected[index]) > tensorAbsoluteTolerance {
            XCTFail(
                "\(what): element \(index) is \(actual[index]), expected \(expected[index])",
                file: file, line: line
            )
            return
        }
    }

    static func assertClose(
        _ actual: Double?, _ expected: Double?, _ what: String,
        file: StaticString = #filePath, line: UInt = #line
    ) {
        guard let actual, let expected else {
            XCTAssertTrue(actual == nil && expected == nil, "\(what): \(String(describing: actual)) "
                + "vs \(String(describing: expected))", file: file, line: line)
            return
        }
        let scale = max(abs(expected), 1e-300)
        XCTAssertLessThanOrEqual(
            abs(actual - expected) / scale, doubleRelativeTolerance,
            "\(what): \(actual), expected \(expected)", file: file, line: line
        )
    }
}
