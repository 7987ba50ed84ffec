package dev.edgekit.core

import kotlin.math.cos
import kotlin.math.min
import kotlin.math.sqrt

/**
 * Deterministic DDIM (eta = 0) driven only by the manifest's scheduler spec: a line-by-line
 * port of edgekit/scheduling.py `DDIMSampler`. The noise schedule and the step coefficients
 * are double; the arrays are float, and each coefficient is rounded to float before it
 * touches them, as numpy does when a Python float meets a float32 array.
 *
 * The loop an app runs:
 *   val scheduler = DdimScheduler(spec); for (t in scheduler.setTimesteps(steps)) {
 *     noise = classifierFreeGuidance(unet(latents, t, uncond), unet(latents, t, cond), scale)
 *     latents = scheduler.step(noise, t, latents) }
 */
class DdimScheduler(val spec: SchedulerSpec) {
    /** abar[t]: the fraction of signal variance left after t + 1 noising steps. */
    val alphasCumprod: DoubleArray = alphasCumprod(spec)
    private val finalAlphaCumprod = if (spec.setAlphaToOne) 1.0 else alphasCumprod[0]
    var timesteps: IntArray = IntArray(0)
        private set
    private var stepRatio = 0

    /** The `steps` UNet timesteps, noisiest first. */
    fun setTimesteps(steps: Int): IntArray {
        val n = spec.numTrainTimesteps
        if (steps < 1 || steps > n) {
            throw EdgekitCoreException(
                "--steps $steps is not allowed: the schedule has $n training timesteps. " +
                    "Hint: use 1 to $n steps.",
            )
        }
        val result = when (spec.timestepSpacing) {
            TimestepSpacing.LEADING -> {
                val ratio = n / steps
                IntArray(steps) { (steps - 1 - it) * ratio + spec.stepsOffset }
            }
            TimestepSpacing.LINSPACE -> if (steps == 1) {
                intArrayOf(0)
            } else {
                val delta = (n - 1).toDouble() / (steps - 1)
                // Python's round(): half to even, which Math.rint is.
                IntArray(steps) { if (it == 0) n - 1 else Math.rint((steps - 1 - it) * delta).toInt() }
            }
            TimestepSpacing.TRAILING -> {
                // The step the way np.arange computes it: NOT exactly -n / steps.
                val d = (n - n.toDouble() / steps) - n
                IntArray(steps) { Math.rint(n + it * d).toInt() - 1 }
            }
        }
        val last = result.maxOrNull()!!
        if (last >= n) {
            throw EdgekitCoreException(
                "--steps $steps with steps_offset ${spec.stepsOffset} reaches timestep $last, past " +
                    "the schedule's last (${n - 1}). Hint: use fewer than $steps steps.",
            )
        }
        timesteps = result
        // Every spacing steps back by n / steps to find the previous timestep, as diffusers' DDIM.
        stepRatio = n / steps
        return result
    }

    /** DDIM leaves the UNet input unscaled. */
    fun scaleModelInput(sample: FloatArray, timestep: Int): FloatArray = sample

    /** x_t -> x_{t_prev}: formula (12) of the DDIM paper with sigma_t = 0. */
    fun step(modelOutput: FloatArray, timestep: Int, sample: FloatArray): FloatArray {
        check(stepRatio > 0) { "call setTimesteps before step" }
        if (modelOutput.size != sample.size) {
            throw EdgekitCoreException(
                "step: model output has ${modelOutput.size} values, the sample ${sample.size}.",
            )
        }
        if (timestep !in 0 until spec.numTrainTimesteps) {
            throw EdgekitCoreException("step: timestep $timestep is outside the schedule.")
        }
        // 1. the previous timestep and the signal fractions at both ends of this step
        val prevTimestep = timestep - stepRatio
        val alphaT = alphasCumprod[timestep]
        val alphaPrev = if (prevTimestep >= 0) alphasCumprod[prevTimestep] else finalAlphaCumprod
        val betaT = 1.0 - alphaT
        val sqrtAlpha = sqrt(alphaT).toFloat()
        val sqrtBeta = sqrt(betaT).toFloat()
        val sqrtAlphaPrev = sqrt(alphaPrev).toFloat()
        val sqrtBetaPrev = sqrt(1.0 - alphaPrev).toFloat()
        val clip = spec.clipSampleRange.toFloat()
        val prev = FloatArray(sample.size)
        for (i in sample.indices) {
            val x = sample[i]
            val out = modelOutput[i]
            // 2. predicted x0 and noise, by prediction type
            var x0: Float
            val eps: Float
            when (spec.predictionType) {
                PredictionType.EPSILON -> {
                    x0 = (x - sqrtBeta * out) / sqrtAlpha
                    eps = out
                }
                PredictionType.SAMPLE -> {
                    x0 = out
                    eps = (x - sqrtAlpha * x0) / sqrtBeta
                }
                PredictionType.V_PREDICTION -> {
                    x0 = sqrtAlpha * x - sqrtBeta * out
                    eps = sqrtAlpha * out + sqrtBeta * x
                }
            }
            // 3. clamp x0 (eps is not re-derived from the clamped x0)
            if (spec.clipSample) x0 = min(maxOf(x0, -clip), clip)
            // 4. x_prev = sqrt(abar_prev) * x0 + sqrt(1 - abar_prev) * eps
            prev[i] = sqrtAlphaPrev * x0 + sqrtBetaPrev * eps
        }
        return prev
    }

    companion object {
        private const val COSINE_MAX_BETA = 0.999
        private const val COSINE_OFFSET = 0.008

        /** edgekit/scheduling.py `alphas_cumprod`, in double, in the same operation order. */
        fun alphasCumprod(spec: SchedulerSpec): DoubleArray {
            val n = spec.numTrainTimesteps
            val betas = DoubleArray(n) { i ->
                when (spec.betaSchedule) {
                    BetaSchedule.LINEAR -> spec.betaStart + i * (spec.betaEnd - spec.betaStart) / (n - 1)
                    BetaSchedule.SCALED_LINEAR -> {
                        val low = sqrt(spec.betaStart)
                        val high = sqrt(spec.betaEnd)
                        val root = low + i * (high - low) / (n - 1)
                        root * root
                    }
                    BetaSchedule.SQUAREDCOS_CAP_V2 -> {
                        fun f(u: Double): Double {
                            val c = cos((u + COSINE_OFFSET) / (1 + COSINE_OFFSET) * Math.PI / 2)
                            return c * c
                        }
                        min(1 - f((i + 1).toDouble() / n) / f(i.toDouble() / n), COSINE_MAX_BETA)
                    }
                }
            }
            val result = DoubleArray(n)
            var product = 1.0
            for (i in 0 until n) {
                product *= 1.0 - betas[i]
                result[i] = product
            }
            return result
        }
    }
}

/** Classifier-free guidance as edgekit/generate.py applies it, in float:
 * uncond + scale * (cond - uncond). */
fun classifierFreeGuidance(uncond: FloatArray, cond: FloatArray, scale: Float): FloatArray {
    if (uncond.size != cond.size) {
        throw EdgekitCoreException("guidance: ${uncond.size} unconditional values, ${cond.size} conditional.")
    }
    return FloatArray(uncond.size) { uncond[it] + scale * (cond[it] - uncond[it]) }
}
