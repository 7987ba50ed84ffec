import Foundation

/// The manifest's `pipeline.scheduler` block: the denoising loop with every number explicit
/// (edgekit/scheduling.py SchedulerSpec).
public struct SchedulerSpec: Decodable, Equatable {
    public enum BetaSchedule: String, Decodable, Sendable {
        case linear, scaledLinear = "scaled_linear", squaredcosCapV2 = "squaredcos_cap_v2"
    }

    public enum PredictionType: String, Decodable, Sendable {
        case epsilon, vPrediction = "v_prediction", sample
    }

    public enum TimestepSpacing: String, Decodable, Sendable { case leading, trailing, linspace }

    /// "ddim" is the only sampler edgekit writes.
    public let algorithm: String
    public let numTrainTimesteps: Int
    public let betaStart: Double
    public let betaEnd: Double
    public let betaSchedule: BetaSchedule
    public let predictionType: PredictionType
    public let timestepSpacing: TimestepSpacing
    public let stepsOffset: Int
    public let setAlphaToOne: Bool
    public let clipSample: Bool
    public let clipSampleRange: Double
    public let eta: Double
    public let initNoiseSigma: Double

    enum CodingKeys: String, CodingKey {
        case algorithm, numTrainTimesteps = "num_train_timesteps", betaStart = "beta_start"
        case betaEnd = "beta_end", betaSchedule = "beta_schedule"
        case predictionType = "prediction_type", timestepSpacing = "timestep_spacing"
        case stepsOffset = "steps_offset", setAlphaToOne = "set_alpha_to_one"
        case clipSample = "clip_sample", clipSampleRange = "clip_sample_range", eta
        case initNoiseSigma = "init_noise_sigma"
    }
}

/// Deterministic DDIM (eta = 0) driven only by a SchedulerSpec, ported line by line from
/// edgekit/scheduling.py: coefficients in Double, arrays in Float, and every array operation
/// in the order numpy does it (a Double coefficient meets a float32 array as a float32, since
/// numpy 2 treats a Python float as weak), so results match edgekit's to the last bits.
///
/// The loop an app runs:
///     let scheduler = try DdimScheduler(spec); let timesteps = try scheduler.setTimesteps(20)
///     var latents = noise (standard normal) * spec.initNoiseSigma
///     for t in timesteps {
///         let guided = classifierFreeGuidance(uncond: unet(latents, t, uncondText),
///                                             cond: unet(latents, t, text), scale: 7.5)
///         latents = scheduler.step(modelOutput: guided, timestep: t, sample: latents)
///     }
public final class DdimScheduler {
    // squaredcos_cap_v2 caps each beta here (diffusers' value) so no alpha reaches zero.
    static let cosineMaxBeta = 0.999
    static let cosineOffset = 0.008

    public let spec: SchedulerSpec
    /// abar[t]: the fraction of signal variance left after t + 1 noising steps.
    public let alphasCumprod: [Double]
    /// The abar "before" the last step, whose previous timestep is negative.
    public let finalAlphaCumprod: Double
    public private(set) var timesteps: [Int] = []
    public private(set) var stepRatio = 0

    public init(_ spec: SchedulerSpec) throws {
        guard spec.algorithm == "ddim" else {
            throw EdgekitCoreError(
                "Sampler '\(spec.algorithm)' is not implemented.", hint: "use 'ddim'."
            )
        }
        self.spec = spec
        let alphas = Self.cumulativeAlphas(spec)  // a local: self is not fully set up yet
        alphasCumprod = alphas
        finalAlphaCumprod = spec.setAlphaToOne ? 1.0 : alphas[0]
    }

    /// abar for every training timestep, in Double (see edgekit.scheduling.alphas_cumprod).
    static func cumulativeAlphas(_ spec: SchedulerSpec) -> [Double] {
        let n = spec.numTrainTimesteps
        let betas: [Double] = (0..<n).map { index in
            let i = Double(index)
            switch spec.betaSchedule {
            case .linear:
                return spec.betaStart + i * (spec.betaEnd - spec.betaStart) / Double(n - 1)
            case .scaledLinear:
                let low = spec.betaStart.squareRoot(), high = spec.betaEnd.squareRoot()
                let root = low + i * (high - low) / Double(n - 1)
                return root * root
            case .squaredcosCapV2:
                func f(_ u: Double) -> Double {
                    let c = cos((u + cosineOffset) / (1 + cosineOffset) * Double.pi / 2)
                    return c * c
                }
                return min(1 - f((i + 1) / Double(n)) / f(i / Double(n)), cosineMaxBeta)
            }
        }
        var product = 1.0
        return betas.map { beta in
            product *= 1.0 - beta
            return product
        }
    }

    /// The `steps` UNet timesteps, noisiest first. Rounding is half to even, as Python's
    /// round (linspace N=1000 steps=3 gives 499.5 -> 500); 'trailing' computes its step the
    /// way np.arange does, (N - N / steps) - N, not -N / steps.
    public static func timesteps(_ spec: SchedulerSpec, steps: Int) throws -> [Int] {
        let n = spec.numTrainTimesteps
        guard steps >= 1 && steps <= n else {
            throw EdgekitCoreError(
                "\(steps) steps are not allowed: the schedule has \(n) training timesteps.",
                hint: "use 1 to \(n) steps."
            )
        }
        let result: [Int]
        switch spec.timestepSpacing {
        case .leading:
            let ratio = n / steps
            result = (0..<steps).reversed().map { $0 * ratio + spec.stepsOffset }
        case .linspace:
            if steps == 1 {
                result = [0]
            } else {
                let delta = Double(n - 1) / Double(steps - 1)
                result = [n - 1] + (0..<(steps - 1)).reversed().map {
                    Int((Double($0) * delta).rounded(.toNearestOrEven))
                }
            }
        case .trailing:
            let d = (Double(n) - Double(n) / Double(steps)) - Double(n)
            result = (0..<steps).map {
                Int((Double(n) + Double($0) * d).rounded(.toNearestOrEven)) - 1
            }
        }
        if let last = result.max(), last >= n {
            throw EdgekitCoreError(
                "\(steps) steps with steps_offset \(spec.stepsOffset) reach timestep \(last), "
                    + "past the schedule's last (\(n - 1)).",
                hint: "use fewer than \(steps) steps."
            )
        }
        return result
    }

    @discardableResult
    public func setTimesteps(_ steps: Int) throws -> [Int] {
        timesteps = try Self.timesteps(spec, steps: steps)
        // Every spacing steps back by N / steps to find the previous timestep, as diffusers'
        // DDIM does, even where the picked timesteps are not that far apart.
        stepRatio = spec.numTrainTimesteps / steps
        return timesteps
    }

    /// x_t -> x_{t_prev}: formula (12) of the DDIM paper with sigma_t = 0.
    public func step(modelOutput: [Float], timestep: Int, sample: [Float]) -> [Float] {
        precondition(modelOutput.count == sample.count, "model output and sample differ in size")
        precondition(stepRatio > 0, "call setTimesteps(_:) before step")
        // 1. The previous timestep, and the signal fractions at both ends of this step.
        let previous = timestep - stepRatio
        let alphaT = alphasCumprod[timestep]
        let alphaPrev = previous >= 0 ? alphasCumprod[previous] : finalAlphaCumprod
        let betaT = 1.0 - alphaT
        let sqrtAlphaT = Float(alphaT.squareRoot()), sqrtBetaT = Float(betaT.squareRoot())
        let sqrtAlphaPrev = Float(alphaPrev.squareRoot())
        let sqrtOneMinusAlphaPrev = Float((1.0 - alphaPrev).squareRoot())
        let clipRange = Float(spec.clipSampleRange)
        var previousSample = [Float](repeating: 0, count: sample.count)
        for i in sample.indices {
            let x = sample[i], out = modelOutput[i]
            // 2. Predicted x0 and noise from the UNet output, by prediction type.
            var predictedX0: Float
            let predictedNoise: Float
            switch spec.predictionType {
            case .epsilon:
                predictedX0 = (x - sqrtBetaT * out) / sqrtAlphaT
                predictedNoise = out
            case .sample:
                predictedX0 = out
                predictedNoise = (x - sqrtAlphaT * predictedX0) / sqrtBetaT
            case .vPrediction:
                predictedX0 = sqrtAlphaT * x - sqrtBetaT * out
                predictedNoise = sqrtAlphaT * out + sqrtBetaT * x
            }
            // 3. Optionally clamp x0; the noise is not re-derived from the clamped x0.
            if spec.clipSample {
                predictedX0 = min(max(predictedX0, -clipRange), clipRange)
            }
            // 4. x_prev = sqrt(abar_prev) * x0 + sqrt(1 - abar_prev) * eps.
            previousSample[i] = sqrtAlphaPrev * predictedX0 + sqrtOneMinusAlphaPrev * predictedNoise
        }
        return previousSample
    }

    /// DDIM feeds the latents to the UNet unscaled.
    public func scaleModelInput(_ sample: [Float], timestep: Int) -> [Float] { sample }
}

/// Classifier-free guidance as edgekit.generate does it, in float32:
/// uncond + scale * (cond - uncond).
public func classifierFreeGuidance(uncond: [Float], cond: [Float], scale: Double) -> [Float] {
    precondition(uncond.count == cond.count, "the two guidance branches differ in size")
    let guidanceScale = Float(scale)
    return zip(uncond, cond).map { u, c in u + guidanceScale * (c - u) }
}
