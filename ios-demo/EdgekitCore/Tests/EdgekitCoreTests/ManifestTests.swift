import Foundation
import XCTest

@testable import EdgekitCore

final class ManifestTests: XCTestCase {
    /// The manifest as plain JSON, to compare the typed reading with and to break on purpose.
    private func rawManifest() throws -> [String: Any] {
        let object = try JSONSerialization.jsonObject(with: Contract.data("manifest.json"))
        return try XCTUnwrap(object as? [String: Any])
    }

    private func parse(_ raw: [String: Any]) throws -> Manifest {
        try Manifest.parse(JSONSerialization.data(withJSONObject: raw))
    }

    func testReadsTheManifestEdgekitWrites() throws {
        let raw = try rawManifest()
        let manifest = try Manifest.parse(Contract.data("manifest.json"))
        XCTAssertEqual(manifest.name, raw["name"] as? String)
        XCTAssertEqual(manifest.format, raw["format"] as? String)
        XCTAssertEqual(manifest.modelKind, "mobilevit-classifier")
        let rawComponent = try XCTUnwrap((raw["components"] as? [[String: Any]])?.first)
        let component = try manifest.component()
        XCTAssertEqual(component.modelFile, rawComponent["model_file"] as? String)
        let rawInput = try XCTUnwrap((rawComponent["inputs"] as? [[String: Any]])?.first)
        let input = try component.input("pixel_values")
        XCTAssertEqual(input.shape, rawInput["shape"] as? [Int])
        XCTAssertEqual(input.dtype, "float32")
        // The classifier's labels are one per logit.
        let logits = try component.output("logits")
        XCTAssertEqual(manifest.labels?.count, logits.shape.last)
        // Preprocessing gives the tensor the model takes.
        let preprocessing = try XCTUnwrap(manifest.preprocessing)
        let size = preprocessing.outputSize
        XCTAssertEqual(
            input.shape, preprocessing.layout == .nchw
                ? [input.shape[0], 3, size.height, size.width]
                : [input.shape[0], size.height, size.width, 3]
        )
        XCTAssertEqual(manifest.modelFileSHA256(of: component)?.count, 64)
        XCTAssertGreaterThan(manifest.modelSizeBytes(of: component), 0)
    }

    func testRefusesAnotherMajorSchemaVersion() throws {
        var raw = try rawManifest()
        raw["schema_version"] = "9.0"
        XCTAssertThrowsError(try parse(raw)) { error in
            XCTAssertTrue("\(error)".contains("schema_version 9.0"), "\(error)")
        }
    }

    func testNamesAMissingField() throws {
        var raw = try rawManifest()
        raw.removeValue(forKey: "components")
        XCTAssertThrowsError(try parse(raw)) { error in
            XCTAssertTrue("\(error)".contains("missing field components"), "\(error)")
        }
    }

    func testNamesAnUnknownInterpolation() throws {
        var raw = try rawManifest()
        var preprocessing = try XCTUnwrap(raw["preprocessing"] as? [String: Any])
        preprocessing["interpolation"] = "magic"
        raw["preprocessing"] = preprocessing
        XCTAssertThrowsError(try parse(raw)) { error in
            XCTAssertTrue("\(error)".contains("preprocessing.interpolation"), "\(error)")
        }
    }

    func testUnknownComponentListsTheKnownOnes() throws {
        let manifest = try Manifest.parse(Contract.data("manifest.json"))
        XCTAssertThrowsError(try manifest.component("unet")) { error in
            XCTAssertTrue("\(error)".contains("it has: model"), "\(error)")
        }
    }
}
