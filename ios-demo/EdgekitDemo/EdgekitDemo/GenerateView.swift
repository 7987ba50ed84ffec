import EdgekitCore
import SwiftUI

/// Prompt -> image with a Stable Diffusion pipeline artifact, with progress per step.
struct GenerateView: View {
    @Environment(ArtifactLibrary.self) private var library
    @State private var selectedName: String?
    @State private var units: ComputeUnits = .all
    @State private var prompt = "a photo of an astronaut riding a horse on mars"
    @State private var negativePrompt = ""
    @State private var steps = 20
    @State private var guidanceScale = 7.5
    @State private var seed: UInt64 = 0
    @State private var progress: StableDiffusionPipeline.Progress?
    @State private var image: UIImage?
    @State private var message: String?
    @State private var running: Task<Void, Never>?

    private var pipelines: [Artifact] { library.artifacts.filter(\.isPipeline) }

    var body: some View {
        NavigationStack {
            Form {
                Section("Pipeline") {
                    Picker("Artifact", selection: $selectedName) {
                        Text("Choose…").tag(String?.none)
                        ForEach(pipelines) { Text($0.name).tag(Optional($0.name)) }
                    }
                    Picker("Compute units", selection: $units) {
                        ForEach(ComputeUnits.allCases) { Text($0.rawValue).tag($0) }
                    }
                }
                Section("Prompt") {
                    TextField("Prompt", text: $prompt, axis: .vertical)
                    TextField("Negative prompt", text: $negativePrompt, axis: .vertical)
                    Stepper("Steps: \(steps)", value: $steps, in: 1...100)
                    Stepper(
                        "Guidance: \(guidanceScale, specifier: "%.1f")", value: $guidanceScale,
                        in: 1...20, step: 0.5
                    )
                    Stepper("Seed: \(seed)", value: $seed, in: 0...UInt64(UInt32.max))
                }
                Section {
                    if running == nil {
                        Button("Generate") { start() }
                    } else {
                        Button("Stop", role: .destructive) { running?.cancel() }
                    }
                    if let progress {
                        ProgressView(value: Double(progress.step), total: Double(progress.steps))
                        Text(
                            "Step \(progress.step) of \(progress.steps) (t = \(progress.timestep)), "
                                + String(format: "%.0f ms", progress.stepMs)
                        )
                        .font(.footnote)
                    }
                }
                if let image {
                    Section("Image") { Image(uiImage: image).resizable().scaledToFit() }
                }
                if let message {
                    Section { Text(message).foregroundStyle(.red) }
                }
            }
            .navigationTitle("Generate")
        }
    }

    private func start() {
        message = nil
        guard let name = selectedName, let artifact = library.artifact(named: name) else {
            message = pipelines.isEmpty
                ? "No pipeline installed: run `edgekit install ARTIFACT --app ios-demo`."
                : "Choose a pipeline first."
            return
        }
        let settings = (prompt, negativePrompt, steps, guidanceScale, seed, units)
        running = Task {
            defer { running = nil }
            do {
                let pipeline = try await StableDiffusionPipeline(artifact, units: settings.5)
                // The loop runs off the main actor; progress comes back to it. A detached task
                // does not inherit cancellation, so Stop is passed on by hand.
                let work = Task.detached(priority: .userInitiated) {
                    try pipeline.generate(
                        prompt: settings.0, negativePrompt: settings.1, steps: settings.2,
                        guidanceScale: settings.3, seed: settings.4
                    ) { step in
                        Task { @MainActor in progress = step }
                    }
                }
                let result = try await withTaskCancellationHandler {
                    try await work.value
                } onCancel: {
                    work.cancel()
                }
                image = result
            } catch is CancellationError {
                message = "Stopped."
            } catch {
                message = "\(error)"
            }
        }
    }
}
