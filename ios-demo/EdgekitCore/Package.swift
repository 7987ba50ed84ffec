// swift-tools-version:5.9
// EdgekitCore: what the iOS demo app does between an edgekit artifact and its Core ML model,
// with Foundation only (no UIKit, Core ML or Core Graphics), so `swift test` runs on macOS and
// on Linux. Its tests read the contract vectors that edgekit's Python tests write and check
// (tests/contract at the repository root).
import PackageDescription

let package = Package(
    name: "EdgekitCore",
    platforms: [.iOS(.v17), .macOS(.v14)],
    products: [
        .library(name: "EdgekitCore", targets: ["EdgekitCore"]),
    ],
    targets: [
        .target(name: "EdgekitCore"),
        .testTarget(name: "EdgekitCoreTests", dependencies: ["EdgekitCore"]),
    ]
)
