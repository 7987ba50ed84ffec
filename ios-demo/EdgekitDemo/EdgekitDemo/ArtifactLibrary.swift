import EdgekitCore
import Foundation
import Observation

/// One artifact folder: its manifest and where it lives.
struct Artifact: Identifiable, Hashable {
    let folder: URL
    let manifest: Manifest

    var id: URL { folder }
    var name: String { manifest.name }
    var isClassifier: Bool { manifest.preprocessing != nil && manifest.labels != nil }
    var isPipeline: Bool { manifest.pipeline != nil }

    static func == (a: Artifact, b: Artifact) -> Bool { a.folder == b.folder }
    func hash(into hasher: inout Hasher) { hasher.combine(folder) }
}

/// The artifacts the app can run: folders with a manifest.json under the bundled `Models`
/// folder (where `edgekit install` puts them) and under Documents/Models (copied in with the
/// Files app or `xcrun devicectl device copy to`). Only Core ML artifacts are listed; others
/// are reported with the reason.
@Observable
@MainActor
final class ArtifactLibrary {
    nonisolated static let modelsFolderName = "Models"
    nonisolated static let supportedFormat = "coreml"

    private(set) var artifacts: [Artifact] = []
    /// One line per folder that could not be used, shown in the Benchmark tab.
    private(set) var problems: [String] = []
    private(set) var launchBenchmarkStatus: String?

    // nonisolated: the benchmark runner writes its reports here from off the main actor.
    nonisolated static var documentsFolder: URL {
        FileManager.default.urls(for: .documentDirectory, in: .userDomainMask)[0]
    }

    func reload() async {
        var found: [Artifact] = []
        var problems: [String] = []
        let roots = [
            Bundle.main.resourceURL?.appendingPathComponent(Self.modelsFolderName),
            Self.documentsFolder.appendingPathComponent(Self.modelsFolderName),
        ].compactMap { $0 }
        for root in roots {
            let folders = (try? FileManager.default.contentsOfDirectory(
                at: root, includingPropertiesForKeys: [.isDirectoryKey]
            )) ?? []
            for folder in folders.sorted(by: { $0.path < $1.path }) {
                let manifestURL = folder.appendingPathComponent(Manifest.fileName)
                guard FileManager.default.fileExists(atPath: manifestURL.path) else { continue }
                do {
                    let manifest = try Manifest.parse(contentsOf: manifestURL)
                    guard manifest.format == Self.supportedFormat else {
                        problems.append(
                            "\(folder.lastPathComponent): format '\(manifest.format)'; this app "
                                + "runs Core ML artifacts (edgekit export --target coreml)."
                        )
                        continue
                    }
                    found.append(Artifact(folder: folder, manifest: manifest))
                } catch {
                    problems.append("\(folder.lastPathComponent): \(error)")
                }
            }
        }
        artifacts = found
        self.problems = problems
    }

    func artifact(named name: String) -> Artifact? {
        artifacts.first { $0.name == name || $0.folder.lastPathComponent == name }
    }

    /// Benchmark mode started from the command line: run, write the report, say where.
    func runLaunchBenchmark(_ request: BenchmarkRequest) async {
        guard let artifact = artifact(named: request.artifactName) else {
            let known = artifacts.map(\.name).joined(separator: ", ")
            launchBenchmarkStatus = "No artifact '\(request.artifactName)'; installed: "
                + (known.isEmpty ? "none" : known) + "."
            return
        }
        launchBenchmarkStatus = "Benchmarking \(artifact.name)…"
        do {
            let url = try await BenchmarkRunner(request: request).run(artifact) { _ in }
            launchBenchmarkStatus = "Report written to \(url.path)"
        } catch {
            launchBenchmarkStatus = "Benchmark failed: \(error)"
        }
    }
}
