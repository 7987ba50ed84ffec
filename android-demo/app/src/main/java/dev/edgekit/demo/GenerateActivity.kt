package dev.edgekit.demo

import android.app.Activity
import android.graphics.Bitmap
import android.os.Bundle
import android.os.SystemClock
import android.text.InputType
import android.widget.EditText
import android.widget.ImageView
import android.widget.ProgressBar
import android.widget.TextView
import dev.edgekit.core.ClipTokenizer
import dev.edgekit.core.DdimScheduler
import dev.edgekit.core.Manifest
import dev.edgekit.core.classifierFreeGuidance
import dev.edgekit.demo.runtime.InputValues
import java.io.File
import java.util.Random

/**
 * Text to image with an exported Stable Diffusion pipeline, the loop of edgekit/generate.py:
 * tokenizer -> text encoder (prompt and negative prompt) -> DDIM denoising with classifier-free
 * guidance (the manifest's `pipeline.scheduler`) -> VAE decoder. Tokenizer, scheduler and
 * guidance are the core's; the three components run on the artifact's runtime.
 *
 * The initial noise comes from java.util.Random, not torch's generator, so a seed here does not
 * give the image `edgekit generate` gives for the same seed; everything after the noise is the
 * same arithmetic.
 */
class GenerateActivity : Activity() {
    private lateinit var screen: Screen
    private lateinit var prompt: EditText
    private lateinit var negativePrompt: EditText
    private lateinit var steps: EditText
    private lateinit var guidance: EditText
    private lateinit var seed: EditText
    private lateinit var progress: ProgressBar
    private lateinit var status: TextView
    private lateinit var image: ImageView
    private lateinit var folder: File
    private lateinit var artifact: Artifact
    private val manifest: Manifest get() = artifact.manifest
    @Volatile private var running = false

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        screen = Screen(this)
        folder = File(requireNotNull(intent.getStringExtra(MainActivity.EXTRA_ARTIFACT)))
        screen.text(folder.name, sizeSp = 20f)
        prompt = field("Prompt", "a photo of an astronaut riding a horse", InputType.TYPE_CLASS_TEXT)
        negativePrompt = field("Negative prompt", "", InputType.TYPE_CLASS_TEXT)
        steps = field("Steps", "20", InputType.TYPE_CLASS_NUMBER)
        guidance = field("Guidance scale", "7.5", InputType.TYPE_CLASS_NUMBER or InputType.TYPE_NUMBER_FLAG_DECIMAL)
        seed = field("Seed", "0", InputType.TYPE_CLASS_NUMBER)
        screen.button("Generate") { generate() }
        progress = screen.add(ProgressBar(this, null, android.R.attr.progressBarStyleHorizontal))
        status = screen.text()
        image = screen.add(ImageView(this).apply { adjustViewBounds = true })
        inBackground(
            work = { Artifact(folder) },
            onError = { status.text = it },
            onDone = { opened ->
                artifact = opened
                val parsed = opened.manifest
                status.text = if (parsed.pipeline == null) {
                    "${parsed.name} is a ${parsed.modelKind} artifact, not a Stable Diffusion pipeline."
                } else {
                    "${parsed.format}, ${parsed.precision}" +
                        if (parsed.randomWeights) " (random weights: expect noise)" else ""
                }
            },
        )
    }

    private fun field(label: String, initial: String, type: Int): EditText {
        screen.text(label, sizeSp = 13f)
        return screen.add(EditText(this).apply {
            setText(initial)
            inputType = type
        })
    }

    private fun generate() {
        if (running || !::artifact.isInitialized || manifest.pipeline == null) return
        val stepCount = steps.text.toString().toIntOrNull()?.takeIf { it >= 1 }
            ?: return run { status.text = "Steps must be a whole number, 1 or more." }
        val scale = guidance.text.toString().toFloatOrNull()
            ?: return run { status.text = "The guidance scale must be a number." }
        val seedValue = seed.text.toString().toLongOrNull() ?: 0L
        val request = Request(prompt.text.toString(), negativePrompt.text.toString(), stepCount, scale, seedValue)
        running = true
        progress.max = stepCount
        progress.progress = 0
        status.text = "Loading the text encoder, UNet and VAE decoder..."
        inBackground(
            work = { run(request) },
            onError = {
                running = false
                status.text = it
            },
            onDone = { (bitmap, summary) ->
                running = false
                image.setImageBitmap(bitmap)
                status.text = summary
            },
        )
    }

    private class Request(
        val prompt: String,
        val negativePrompt: String,
        val steps: Int,
        val guidanceScale: Float,
        val seed: Long,
    )

    private fun run(request: Request): Pair<Bitmap, String> {
        val info = requireNotNull(manifest.pipeline)
        val load = { name: String -> artifact.open(name) }
        // vocab.json + merges.txt, written into the artifact by the export (pipeline.tokenizer_files).
        val tokenizer = ClipTokenizer.fromFolder(folder)
        val started = SystemClock.elapsedRealtimeNanos()
        // 1. Text encoder: the prompt and the negative prompt (the unconditional branch).
        val (cond, uncond) = load("text-encoder").use { text ->
            listOf(request.prompt, request.negativePrompt).map { words ->
                text.run(listOf(InputValues.Ints(tokenizer.encode(words))))[0]
            }
        }
        // 2. Denoise: DDIM with eta 0 draws no noise after the initial latents.
        val scheduler = DdimScheduler(info.scheduler)
        val timesteps = scheduler.setTimesteps(request.steps)
        val latentSize = info.latentChannels * info.latentHeight * info.latentWidth
        val random = Random(request.seed)
        // init_noise_sigma is 1 for DDIM (the manifest schema fixes it), so no scaling here.
        var latents = FloatArray(latentSize) { random.nextGaussian().toFloat() }
        load("unet").use { unet ->
            timesteps.forEachIndexed { index, t ->
                val (noiseUncond, noiseCond) = predictNoise(unet, info.unetBatch, latents, t.toFloat(), uncond, cond)
                val guided = classifierFreeGuidance(noiseUncond, noiseCond, request.guidanceScale)
                latents = scheduler.step(guided, t, latents)
                runOnUiThread {
                    progress.progress = index + 1
                    status.text = "Step ${index + 1} of ${timesteps.size} (t = $t)"
                }
            }
        }
        // 3. Decode: latents / scaling factor -> image (1, 3, H, W) in [-1, 1].
        val scaled = FloatArray(latentSize) { latents[it] / info.vaeScalingFactor.toFloat() }
        val pixels = load("vae-decoder").use { vae -> vae.run(listOf(InputValues.Floats(scaled)))[0] }
        val seconds = (SystemClock.elapsedRealtimeNanos() - started) / 1e9
        val bitmap = toBitmap(pixels, info.imageWidth, info.imageHeight)
        return bitmap to "%d steps in %.1f s (loading included)".format(request.steps, seconds)
    }

    /**
     * The UNet's noise prediction for both guidance branches. A batch-2 UNet
     * (`pipeline.unet_batch` 2) takes them in one call, unconditional first; otherwise it is
     * called once per branch, as edgekit/generate.py does.
     */
    private fun predictNoise(
        unet: LoadedComponent,
        unetBatch: Int,
        latents: FloatArray,
        t: Float,
        uncond: FloatArray,
        cond: FloatArray,
    ): Pair<FloatArray, FloatArray> {
        if (unetBatch == 2) {
            val noise = unet.run(
                listOf(
                    InputValues.Floats(latents + latents),
                    InputValues.Floats(floatArrayOf(t, t)),
                    InputValues.Floats(uncond + cond),
                ),
            )[0]
            return noise.copyOfRange(0, latents.size) to noise.copyOfRange(latents.size, noise.size)
        }
        val timestep = InputValues.Floats(floatArrayOf(t))
        val sample = InputValues.Floats(latents)
        val noiseUncond = unet.run(listOf(sample, timestep, InputValues.Floats(uncond)))[0]
        val noiseCond = unet.run(listOf(sample, timestep, InputValues.Floats(cond)))[0]
        return noiseUncond to noiseCond
    }

    /** (1, 3, H, W) in [-1, 1] -> 8-bit RGB, rounded like edgekit's save_png. */
    private fun toBitmap(chw: FloatArray, width: Int, height: Int): Bitmap {
        val plane = width * height
        fun channel(value: Float) = Math.round((value / 2f + 0.5f).coerceIn(0f, 1f) * 255f)
        val argb = IntArray(plane) { i ->
            (0xFF shl 24) or (channel(chw[i]) shl 16) or (channel(chw[plane + i]) shl 8) or channel(chw[2 * plane + i])
        }
        return Bitmap.createBitmap(argb, width, height, Bitmap.Config.ARGB_8888)
    }
}
