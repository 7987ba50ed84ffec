package dev.edgekit.demo

import android.app.Activity
import android.content.Intent
import android.os.Bundle
import android.widget.LinearLayout
import android.widget.RadioButton
import android.widget.RadioGroup
import dev.edgekit.demo.runtime.Runtimes

/**
 * Lists the artifacts (bundled and in app storage) and opens one on the screen its kind needs:
 * classify for a MobileViT classifier, generate for a Stable Diffusion pipeline, and the
 * benchmark for either.
 */
class MainActivity : Activity() {
    private lateinit var screen: Screen
    private lateinit var choices: RadioGroup
    private lateinit var status: android.widget.TextView
    private var artifacts: List<StoredArtifact> = emptyList()

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        screen = Screen(this)
        screen.text("edgekit demo", sizeSp = 22f)
        screen.text(
            "Bundled: app/src/main/assets/models (edgekit install ARTIFACT --app android-demo). " +
                "App storage: ${ArtifactStore.artifactsFolder(this)}",
            sizeSp = 13f,
        )
        choices = screen.add(RadioGroup(this).apply { orientation = LinearLayout.VERTICAL })
        screen.button("Classify a photo") { launch(ClassifyActivity::class.java) }
        screen.button("Generate an image") { launch(GenerateActivity::class.java) }
        screen.button("Benchmark") { launch(BenchmarkActivity::class.java) }
        status = screen.text()
    }

    override fun onResume() {
        super.onResume()
        // Re-listed on every return: adb may have pushed an artifact meanwhile.
        artifacts = ArtifactStore.list(this)
        choices.removeAllViews()
        artifacts.forEachIndexed { index, artifact ->
            choices.addView(RadioButton(this).apply {
                id = index + 1
                text = "${artifact.name} (${artifact.origin.label})"
            })
        }
        if (artifacts.isNotEmpty()) choices.check(1)
        status.text = if (artifacts.isEmpty()) "No artifacts yet." else ""
    }

    private fun launch(screenClass: Class<out Activity>) {
        val artifact = artifacts.getOrNull(choices.checkedRadioButtonId - 1)
            ?: return run { status.text = "Choose an artifact first." }
        status.text = "Opening ${artifact.name}..."
        inBackground(
            work = {
                val folder = artifact.folder(this)
                val manifest = Artifact(folder).manifest
                Runtimes.unsupportedReason(manifest.format)?.let { throw IllegalStateException(it) }
                folder
            },
            onError = { status.text = it },
            onDone = { folder ->
                status.text = ""
                startActivity(Intent(this, screenClass).putExtra(EXTRA_ARTIFACT, folder.absolutePath))
            },
        )
    }

    companion object {
        /** The artifact folder on disk; the same extra name adb passes (BENCH_PROTOCOL.md). */
        const val EXTRA_ARTIFACT = "artifact"
    }
}
