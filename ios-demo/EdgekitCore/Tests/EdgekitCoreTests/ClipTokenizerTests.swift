import Foundation
import XCTest

@testable import EdgekitCore

/// Prompts -> the 77 ids edgekit's tokenizer gives, from the vocab.json and merges.txt an
/// exported pipeline ships: punctuation, digits, accents, other scripts, emoji, every kind of
/// whitespace, contractions, literal special tokens, the empty prompt and an over-long one.
final class ClipTokenizerTests: XCTestCase {
    struct Cases: Decodable {
        let maxLength: Int
        let cases: [Case]

        enum CodingKeys: String, CodingKey {
            case maxLength = "max_length", cases
        }
    }

    struct Case: Decodable {
        let prompt: String
        let ids: [Int32]
    }

    private static var shared: ClipTokenizer?

    private func tokenizer() throws -> ClipTokenizer {
        if let tokenizer = Self.shared { return tokenizer }
        let merges = try XCTUnwrap(
            String(data: Contract.data("tokenizer/merges.txt"), encoding: .utf8)
        )
        let tokenizer = try ClipTokenizer(
            vocabJSON: Contract.data("tokenizer/vocab.json"), merges: merges
        )
        Self.shared = tokenizer
        return tokenizer
    }

    func testEveryPromptGivesEdgekitsIds() throws {
        let contract = try Contract.decode(Cases.self, "tokenizer/cases.json")
        XCTAssertEqual(contract.maxLength, ClipTokenizer.maxLength)
        let tokenizer = try tokenizer()
        for testCase in contract.cases {
            XCTAssertEqual(tokenizer.encode(testCase.prompt), testCase.ids, testCase.prompt)
        }
    }

    func testRefusesMergesWithoutPairs() throws {
        XCTAssertThrowsError(
            try ClipTokenizer(
                vocabJSON: Data(#"{"<|startoftext|>": 0, "<|endoftext|>": 1}"#.utf8),
                merges: "#version: 0.2\na b c\n"
            )
        ) { error in
            XCTAssertTrue("\(error)".contains("each line holds two symbols"), "\(error)")
        }
    }
}
