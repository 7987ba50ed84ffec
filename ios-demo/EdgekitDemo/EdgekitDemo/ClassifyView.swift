import EdgekitCore
import PhotosUI
import SwiftUI

/// Classify a picked photo or a camera shot with a classifier artifact: top-5 labels with
/// their softmax scores, and how long preprocessing and the model took.
struct ClassifyView: View {
    @Environment(ArtifactLibrary.self) private var library
    @State private var selectedName: String?
    @State private var units: ComputeUnits = .all
    @State private var pickedItem: PhotosPickerItem?
    @State private var showingCamera = false
    @State private var photo: UIImage?
    @State private var result: Classifier.Result?
    @State private var message: String?
    @State private var classifier: Classifier?

    private var classifiers: [Artifact] { library.artifacts.filter(\.isClassifier) }

    var body: some View {
        NavigationStack {
            Form {
                Section("Model") {
                    Picker("Artifact", selection: $selectedName) {
                        Text("Choose…").tag(String?.none)
                        ForEach(classifiers) { Text($0.name).tag(Optional($0.name)) }
                    }
                    Picker("Compute units", selection: $units) {
                        ForEach(ComputeUnits.allCases) { Text($0.rawValue).tag($0) }
                    }
                }
                Section("Photo") {
                    PhotosPicker("Pick a photo", selection: $pickedItem, matching: .images)
                    if UIImagePickerController.isSourceTypeAvailable(.camera) {
                        Button("Take a photo") { showingCamera = true }
                    }
                    if let photo {
                        Image(uiImage: photo).resizable().scaledToFit().frame(maxHeight: 240)
                    }
                }
                if let result {
                    Section("Top 5") {
                        ForEach(result.predictions, id: \.index) { prediction in
                            HStack {
                                Text(prediction.label)
                                Spacer()
                                Text(prediction.probability, format: .percent.precision(.fractionLength(1)))
                                    .monospacedDigit()
                            }
                        }
                        Text(
                            String(
                                format: "Preprocessing %.1f ms, model %.1f ms",
                                result.preprocessMs, result.inferenceMs
                            )
                        )
                        .font(.footnote)
                    }
                }
                if let message {
                    Section { Text(message).foregroundStyle(.red) }
                }
            }
            .navigationTitle("Classify")
            .onChange(of: pickedItem) { _, item in
                Task { await load(item) }
            }
            .onChange(of: selectedName) { _, _ in classifier = nil }
            .onChange(of: units) { _, _ in classifier = nil }
            .sheet(isPresented: $showingCamera) {
                CameraPicker { image in
                    photo = image
                    Task { await classify() }
                }
            }
        }
    }

    private func load(_ item: PhotosPickerItem?) async {
        guard let item else { return }
        do {
            guard let data = try await item.loadTransferable(type: Data.self),
                let image = UIImage(data: data)
            else {
                message = "The picked item is not an image this phone can decode."
                return
            }
            photo = image
            await classify()
        } catch {
            message = "Cannot read the picked photo: \(error.localizedDescription)"
        }
    }

    private func classify() async {
        message = nil
        result = nil
        guard let photo else { return }
        guard let name = selectedName, let artifact = library.artifact(named: name) else {
            message = classifiers.isEmpty
                ? "No classifier installed: run `edgekit install ARTIFACT --app ios-demo`."
                : "Choose an artifact first."
            return
        }
        do {
            if classifier?.artifact != artifact {
                classifier = try await Classifier(artifact, units: units)
            }
            guard let pixels = ImagePixels.rgb8(photo) else {
                message = "The photo could not be drawn as 8-bit RGB."
                return
            }
            result = try classifier?.classify(
                rgb: pixels.pixels, height: pixels.height, width: pixels.width
            )
        } catch {
            message = "\(error)"
        }
    }
}

/// The system camera, for one still photo.
struct CameraPicker: UIViewControllerRepresentable {
    let onPhoto: (UIImage) -> Void
    @Environment(\.dismiss) private var dismiss

    func makeUIViewController(context: Context) -> UIImagePickerController {
        let picker = UIImagePickerController()
        picker.sourceType = .camera
        picker.delegate = context.coordinator
        return picker
    }

    func updateUIViewController(_ controller: UIImagePickerController, context: Context) {}

    func makeCoordinator() -> Coordinator { Coordinator(self) }

    final class Coordinator: NSObject, UIImagePickerControllerDelegate,
        UINavigationControllerDelegate
    {
        let parent: CameraPicker

        init(_ parent: CameraPicker) { self.parent = parent }

        func imagePickerController(
            _ picker: UIImagePickerController,
            didFinishPickingMediaWithInfo info: [UIImagePickerController.InfoKey: Any]
        ) {
            if let image = info[.originalImage] as? UIImage { parent.onPhoto(image) }
            parent.dismiss()
        }

        func imagePickerControllerDidCancel(_ picker: UIImagePickerController) {
            parent.dismiss()
        }
    }
}
