import SwiftUI

/// Benchmark mode in the app: the same runner as the launch-argument mode, with the report
/// shareable from here (AirDrop, Files) for `edgekit bench ingest`.
struct BenchmarkView: View {
    @Environment(ArtifactLibrary.self) private var library
    @State private var selectedName: String?
    @State private var units: Set<ComputeUnits> = Set(ComputeUnits.allCases)
    @State private var runs = 100
    @State private var sustainedMinutes = 0
    @State private var status: String?
    @State private var reportURL: URL?
    @State private var running = false

    var body: some View {
        NavigationStack {
            Form {
                Section("Artifact") {
                    Picker("Artifact", selection: $selectedName) {
                        Text("Choose…").tag(String?.none)
                        ForEach(library.artifacts) { Text($0.name).tag(Optional($0.name)) }
                    }
                }
                Section("Compute units") {
                    ForEach(ComputeUnits.allCases) { unit in
                        Toggle(unit.rawValue, isOn: binding(for: unit))
                    }
                }
                Section("Runs") {
                    Stepper("Timed runs: \(runs)", value: $runs, in: 10...1000, step: 10)
                    Stepper(
                        sustainedMinutes == 0
                            ? "Sustained mode: off" : "Sustained: \(sustainedMinutes) min",
                        value: $sustainedMinutes, in: 0...30
                    )
                }
                Section {
                    Button(running ? "Running…" : "Run benchmark") { start() }
                        .disabled(running || selectedName == nil || units.isEmpty)
                    if let status { Text(status).font(.footnote) }
                    if let reportURL { ShareLink("Share report", item: reportURL) }
                }
                if let launch = library.launchBenchmarkStatus {
                    Section("Launched with -benchmark") { Text(launch).font(.footnote) }
                }
                if !library.problems.isEmpty {
                    Section("Not loaded") {
                        ForEach(library.problems, id: \.self) { Text($0).font(.footnote) }
                    }
                }
            }
            .navigationTitle("Benchmark")
        }
    }

    private func binding(for unit: ComputeUnits) -> Binding<Bool> {
        Binding(
            get: { units.contains(unit) },
            set: { isOn in
                if isOn { units.insert(unit) } else { units.remove(unit) }
            }
        )
    }

    private func start() {
        guard let name = selectedName, let artifact = library.artifact(named: name) else { return }
        var request = BenchmarkRequest(artifactName: name)
        request.computeUnits = ComputeUnits.allCases.filter(units.contains)
        request.runs = runs
        request.sustainedMinutes = Double(sustainedMinutes)
        running = true
        reportURL = nil
        Task {
            defer { running = false }
            do {
                reportURL = try await BenchmarkRunner(request: request).run(artifact) { line in
                    Task { @MainActor in status = line }
                }
                status = "Report written."
            } catch {
                status = "Benchmark failed: \(error)"
            }
        }
    }
}
