package dev.edgekit.demo

import android.app.Activity
import android.content.Intent
import android.net.Uri
import android.os.Bundle
import android.os.SystemClock
import android.provider.MediaStore
import android.widget.ImageView
import android.widget.TextView
import androidx.core.content.FileProvider
import dev.edgekit.core.Manifest
import dev.edgekit.core.Preprocessor
import dev.edgekit.core.topK
import dev.edgekit.demo.runtime.InputValues
import java.io.File

/**
 * Classify a picked or camera photo with a classifier artifact (MobileViT):
 * 1. the platform decodes it upright (PhotoDecoder), 2. the core turns it into the model's input
 * exactly as the manifest's preprocessing block says, 3. the runtime runs it, 4. the core's
 * softmax + top-5 names the classes with the manifest's labels.
 */
class ClassifyActivity : Activity() {
    private lateinit var screen: Screen
    private lateinit var photo: ImageView
    private lateinit var result: TextView
    private lateinit var manifest: Manifest
    private var model: LoadedComponent? = null
    private val captureFile by lazy { File(cacheDir, "photos/capture.jpg") }

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        screen = Screen(this)
        val folder = File(requireNotNull(intent.getStringExtra(MainActivity.EXTRA_ARTIFACT)))
        val title = screen.text(folder.name, sizeSp = 20f)
        screen.button("Pick a photo") {
            startActivityForResult(
                Intent(Intent.ACTION_GET_CONTENT).setType("image/*").addCategory(Intent.CATEGORY_OPENABLE),
                REQUEST_PICK,
            )
        }
        screen.button("Take a photo") { takePhoto() }
        photo = screen.add(ImageView(this).apply { adjustViewBounds = true })
        result = screen.text("Loading the model...")
        inBackground(
            work = {
                val artifact = Artifact(folder)
                val parsed = artifact.manifest
                check(parsed.preprocessing != null && parsed.labels != null) {
                    "${parsed.name} is a ${parsed.modelKind} artifact; classifying needs a " +
                        "manifest with preprocessing and labels (a classifier export)."
                }
                val started = SystemClock.elapsedRealtimeNanos()
                val loaded = artifact.open(parsed.component())
                Triple(parsed, loaded, (SystemClock.elapsedRealtimeNanos() - started) / 1e6)
            },
            onError = { result.text = it },
            onDone = { (parsed, loaded, loadMs) ->
                manifest = parsed
                model = loaded
                title.text = "${parsed.name}: ${parsed.format} on ${loaded.description.name} " +
                    "${loaded.description.version}"
                result.text = "Loaded in %.0f ms. Pick or take a photo.".format(loadMs)
            },
        )
    }

    private fun takePhoto() {
        captureFile.parentFile?.mkdirs()
        val uri = FileProvider.getUriForFile(this, "dev.edgekit.demo.photos", captureFile)
        val capture = Intent(MediaStore.ACTION_IMAGE_CAPTURE)
            .putExtra(MediaStore.EXTRA_OUTPUT, uri)
            .addFlags(Intent.FLAG_GRANT_WRITE_URI_PERMISSION)
        try {
            startActivityForResult(capture, REQUEST_CAMERA)
        } catch (error: android.content.ActivityNotFoundException) {
            result.text = "No camera app on this device; pick a photo instead."
        }
    }

    @Deprecated("Framework Activity result callback; this app has no AndroidX activity library.")
    override fun onActivityResult(requestCode: Int, resultCode: Int, data: Intent?) {
        super.onActivityResult(requestCode, resultCode, data)
        if (resultCode != RESULT_OK) return
        val uri = when (requestCode) {
            REQUEST_PICK -> data?.data
            REQUEST_CAMERA -> Uri.fromFile(captureFile)
            else -> null
        } ?: return
        classify(uri)
    }

    private fun classify(uri: Uri) {
        val loaded = model ?: return run { result.text = "The model is still loading." }
        result.text = "Classifying..."
        inBackground(
            work = { classify(loaded, uri) },
            onError = { result.text = it },
            onDone = { (preview, text) ->
                photo.setImageBitmap(preview)
                result.text = text
            },
        )
    }

    private fun classify(loaded: LoadedComponent, uri: Uri): Pair<android.graphics.Bitmap, String> {
        // 1. Decode upright RGB on the platform.
        val image = PhotoDecoder.decode(contentResolver, uri)
        // 2. The manifest's preprocessing, in the core (the same arithmetic as edgekit).
        var started = SystemClock.elapsedRealtimeNanos()
        val tensor = Preprocessor(manifest.preprocessing!!).run(image.pixels, image.height, image.width)
        val preprocessMs = (SystemClock.elapsedRealtimeNanos() - started) / 1e6
        // 3. Inference.
        started = SystemClock.elapsedRealtimeNanos()
        val logits = loaded.run(listOf(InputValues.Floats(tensor.data)))[0]
        val inferenceMs = (SystemClock.elapsedRealtimeNanos() - started) / 1e6
        // 4. Softmax, top-5, labels.
        val predictions = topK(logits, manifest.labels!!, TOP_K)
        val lines = predictions.joinToString("\n") { "%5.1f%%  %s".format(100 * it.probability, it.label) }
        val preview = PhotoDecoder.preview(image)
        val timing = "\n\n${image.width}x${image.height} photo; preprocessing %.1f ms, inference %.1f ms"
            .format(preprocessMs, inferenceMs)
        val weights = if (manifest.randomWeights) "\n(random weights: the classes mean nothing)" else ""
        return preview to lines + timing + weights
    }

    override fun onDestroy() {
        model?.close()
        super.onDestroy()
    }

    private companion object {
        const val REQUEST_PICK = 1
        const val REQUEST_CAMERA = 2
        const val TOP_K = 5
    }
}
