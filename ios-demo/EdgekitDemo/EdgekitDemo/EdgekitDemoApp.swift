import SwiftUI

/// The edgekit companion app: Core ML artifacts from `edgekit export --target coreml`, run on
/// the phone. Launched with `-benchmark <artifact>` it runs benchmark mode straight away and
/// writes the report (see BenchmarkRequest), so a Mac can drive it with `xcrun devicectl`.
@main
struct EdgekitDemoApp: App {
    @State private var library = ArtifactLibrary()

    var body: some Scene {
        WindowGroup {
            ContentView()
                .environment(library)
                .task {
                    await library.reload()
                    if let request = BenchmarkRequest.fromLaunchArguments() {
                        await library.runLaunchBenchmark(request)
                    }
                }
        }
    }
}

struct ContentView: View {
    var body: some View {
        TabView {
            ClassifyView()
                .tabItem { Label("Classify", systemImage: "photo") }
            GenerateView()
                .tabItem { Label("Generate", systemImage: "wand.and.stars") }
            BenchmarkView()
                .tabItem { Label("Benchmark", systemImage: "speedometer") }
        }
    }
}
