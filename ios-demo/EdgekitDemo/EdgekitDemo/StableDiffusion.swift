import CoreML
import EdgekitCore
import Foundation
import UIKit

/// Text to image with an exported Stable Diffusion pipeline, its own loop on EdgekitCore:
/// CLIP tokenizer -> text encoder -> DDIM with classifier-free guidance over the UNet -> VAE
/// decoder, every number from the manifest's `pipeline` block (edgekit.generate runs the same
/// loop on the host).
///
/// Not apple's ml-stable-diffusion package: edgekit's Core ML pipeline uses that package's
/// resource names, but not its layouts (encoder_hidden_states is (B, 77, D), not the
/// split-einsum (B, D, 1, 77)), and the package has no DDIM sampler, which is what edgekit's
/// manifest specifies (its samplers are PNDM, DPM-Solver++ and discrete flow).
final class StableDiffusionPipeline {
    struct Progress {
        let step: Int
        let steps: Int
        let timestep: Int
        let stepMs: Double
    }

    let artifact: Artifact
    let info: PipelineInfo
    private let tokenizer: ClipTokenizer
    private let textEncoder: (model: MLModel, spec: ComponentManifest)
    private let unet: (model: MLModel, spec: ComponentManifest)
    private let decoder: (model: MLModel, spec: ComponentManifest)

    init(_ artifact: Artifact, units: ComputeUnits) async throws {
        let manifest = artifact.manifest
        guard let info = manifest.pipeline else {
            throw EdgekitCoreError(
                "\(artifact.name) is a \(manifest.modelKind), not a Stable Diffusion pipeline.",
                hint: "export one with `edgekit export tiny-sd --target coreml`."
            )
        }
        let names = manifest.components.map(\.name)
        let missing = ["text-encoder", "unet", "vae-decoder"].filter { !names.contains($0) }
        guard missing.isEmpty else {
            throw EdgekitCoreError(
                "\(artifact.name) lacks \(missing.joined(separator: ", ")); generating needs all "
                    + "three components.",
                hint: "export the pipeline without --components."
            )
        }
        self.artifact = artifact
        self.info = info
        let vocab = try Data(contentsOf: artifact.folder.appendingPathComponent("vocab.json"))
        let merges = try String(
            contentsOf: artifact.folder.appendingPathComponent("merges.txt"), encoding: .utf8
        )
        tokenizer = try ClipTokenizer(vocabJSON: vocab, merges: merges)
        func load(_ name: String) async throws -> (MLModel, ComponentManifest) {
            let component = try manifest.component(name)
            let url = try await ModelLoader.compiledModelURL(for: artifact, component: component)
            return (try ModelLoader.load(url, units: units), component)
        }
        textEncoder = try await load("text-encoder")
        unet = try await load("unet")
        decoder = try await load("vae-decoder")
    }

    func generate(
        prompt: String, negativePrompt: String = "", steps: Int, guidanceScale: Double,
        seed: UInt64, progress: (Progress) -> Void
    ) throws -> UIImage {
        // 1. Text: the prompt and the negative prompt (the unconditional branch).
        let cond = try encode(prompt)
        let uncond = try encode(negativePrompt)
        // 2. Schedule and initial noise.
        let scheduler = try DdimScheduler(info.scheduler)
        let timesteps = try scheduler.setTimesteps(steps)
        let latentCount = info.latentChannels * info.latentHeight * info.latentWidth
        var latents = GaussianNoise.sample(count: latentCount, seed: seed).map {
            $0 * Float(info.scheduler.initNoiseSigma)
        }
        // 3. Denoise: guided UNet output -> one DDIM step, per timestep.
        let clock = ContinuousClock()
        for (index, t) in timesteps.enumerated() {
            try Task.checkCancellation()
            var guided: [Float] = []
            let elapsed = try clock.measure {
                let sample = scheduler.scaleModelInput(latents, timestep: t)
                let (noiseUncond, noiseCond) = try predictNoise(sample, t, uncond: uncond, cond: cond)
                guided = classifierFreeGuidance(
                    uncond: noiseUncond, cond: noiseCond, scale: guidanceScale
                )
            }
            latents = scheduler.step(modelOutput: guided, timestep: t, sample: latents)
            progress(Progress(step: index + 1, steps: steps, timestep: t, stepMs: elapsed.milliseconds))
        }
        // 4. Decode: z = latents / scaling factor, image in [-1, 1] -> [0, 1].
        let scaling = Float(info.vaeScalingFactor)
        let z = latents.map { $0 / scaling }
        let zSpec = try decoder.spec.input("z")
        let decoded = try decoder.model.prediction(
            from: MLDictionaryFeatureProvider(dictionary: ["z": try Tensors.float32(z, zSpec)])
        )
        let image = try Tensors.floats(decoded, "image").map { $0 / 2 + 0.5 }
        guard let picture = ImagePixels.image(
            planes: image, height: info.imageHeight, width: info.imageWidth
        ) else {
            throw EdgekitCoreError(
                "The decoded image could not be drawn.", hint: "check the VAE decoder's output."
            )
        }
        return picture
    }

    /// last_hidden_state for one prompt (batch 1).
    private func encode(_ prompt: String) throws -> [Float] {
        let ids = tokenizer.encode(prompt)
        let spec = try textEncoder.spec.input("input_ids")
        let array = spec.dtype == "int32"
            ? try Tensors.int32(ids, spec) : try Tensors.float32(ids.map(Float.init), spec)
        let outputs = try textEncoder.model.prediction(
            from: MLDictionaryFeatureProvider(dictionary: ["input_ids": array])
        )
        return try Tensors.floats(outputs, "last_hidden_state")
    }

    /// The UNet's noise prediction for both guidance branches: one call of batch 2 where the
    /// UNet was exported so (unconditional first), else two calls of batch 1.
    private func predictNoise(
        _ sample: [Float], _ t: Int, uncond: [Float], cond: [Float]
    ) throws -> ([Float], [Float]) {
        let sampleSpec = try unet.spec.input("sample")
        let timestepSpec = try unet.spec.input("timestep")
        let textSpec = try unet.spec.input("encoder_hidden_states")
        func run(_ samples: [Float], _ text: [Float], batch: Int) throws -> [Float] {
            let inputs = try MLDictionaryFeatureProvider(dictionary: [
                "sample": try Tensors.float32(samples, sampleSpec),
                "timestep": try Tensors.float32([Float](repeating: Float(t), count: batch), timestepSpec),
                "encoder_hidden_states": try Tensors.float32(text, textSpec),
            ])
            return try Tensors.floats(unet.model.prediction(from: inputs), "noise_pred")
        }
        if info.unetBatch == 2 {
            let both = try run(sample + sample, uncond + cond, batch: 2)
            let half = both.count / 2
            return (Array(both[..<half]), Array(both[half...]))
        }
        return (try run(sample, uncond, batch: 1), try run(sample, cond, batch: 1))
    }
}

/// Standard normal noise from a seed (Box-Muller over SplitMix64), the same on every phone.
/// It is not torch's generator: a seed gives other latents here than in `edgekit generate`.
enum GaussianNoise {
    static func sample(count: Int, seed: UInt64) -> [Float] {
        var generator = SplitMix64(seed: seed)
        var values: [Float] = []
        values.reserveCapacity(count + 1)
        while values.count < count {
            // Uniform in (0, 1]: 53 random bits, never exactly 0 (log(0) is -inf).
            let u1 = (Double(generator.next() >> 11) + 1) / 9_007_199_254_740_992
            let u2 = Double(generator.next() >> 11) / 9_007_199_254_740_992
            let radius = (-2 * log(u1)).squareRoot()
            values.append(Float(radius * cos(2 * Double.pi * u2)))
            values.append(Float(radius * sin(2 * Double.pi * u2)))
        }
        return Array(values.prefix(count))
    }
}
