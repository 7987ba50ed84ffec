package dev.edgekit.demo

import dev.edgekit.core.Component
import dev.edgekit.core.Manifest
import dev.edgekit.core.TensorSpec
import dev.edgekit.demo.runtime.InferenceRuntime
import dev.edgekit.demo.runtime.InputValues
import dev.edgekit.demo.runtime.ModelInput
import dev.edgekit.demo.runtime.Runtimes
import java.io.File
import java.util.Random
import org.json.JSONObject

/** Threads when neither the caller nor the manifest's target profile names a count. */
const val DEFAULT_THREADS = 4

/** An opened component: its manifest entry and the runtime that runs it. */
class LoadedComponent(val spec: Component, private val runtime: InferenceRuntime) : AutoCloseable {
    val description get() = runtime.description

    /** Runs with one value per manifest input, in the manifest's order. */
    fun run(values: List<InputValues>): List<FloatArray> {
        require(values.size == spec.inputs.size) {
            "${spec.name} takes ${spec.inputs.size} inputs, got ${values.size}."
        }
        return runtime.run(spec.inputs.zip(values) { input, value -> ModelInput(input.name, shapeOf(input), value) })
    }

    override fun close() = runtime.close()
}

/** An artifact folder on disk with its manifest, read by the core. */
class Artifact(val folder: File) {
    private val manifestText = File(folder, ArtifactStore.MANIFEST).readText()
    val manifest: Manifest = Manifest.parse(manifestText)

    // Two optional manifest fields the app needs beyond the core's Manifest model, read with
    // the platform's own org.json: the target profile's thread count and each input's
    // value_range (the range edgekit verified and benchmarked with on the host).
    private val raw = JSONObject(manifestText)

    /** `profile.runtime.threads`, else [DEFAULT_THREADS]. */
    val profileThreads: Int
        get() = raw.optJSONObject("profile")?.optJSONObject("runtime")?.optInt("threads", 0)
            ?.takeIf { it > 0 } ?: DEFAULT_THREADS

    val name: String get() = manifest.name

    fun open(component: Component, threads: Int = profileThreads): LoadedComponent {
        val runtime = Runtimes.open(
            manifest.format,
            File(folder, component.modelFile),
            threads,
            component.outputs.map { it.name },
        )
        return LoadedComponent(component, runtime)
    }

    fun open(componentName: String, threads: Int = profileThreads): LoadedComponent =
        open(manifest.component(componentName), threads)

    /**
     * Seeded inputs of the manifest's shapes for benchmarking: uniform in each input's
     * `value_range`, else in [0, 1).
     */
    fun seededInputs(component: Component, seed: Long = 0): List<InputValues> {
        val random = Random(seed)
        return component.inputs.map { input ->
            val count = shapeOf(input).fold(1L) { total, dim -> total * dim }.toInt()
            val (low, high) = valueRange(component.name, input.name) ?: (0.0 to 1.0)
            if (input.dtype.startsWith("int")) {
                InputValues.Ints(IntArray(count) { (low + random.nextDouble() * (high - low)).toInt() })
            } else {
                InputValues.Floats(FloatArray(count) { (low + random.nextDouble() * (high - low)).toFloat() })
            }
        }
    }

    private fun valueRange(component: String, input: String): Pair<Double, Double>? {
        val components = raw.getJSONArray("components")
        for (i in 0 until components.length()) {
            val entry = components.getJSONObject(i)
            if (entry.getString("name") != component) continue
            val inputs = entry.getJSONArray("inputs")
            for (j in 0 until inputs.length()) {
                val spec = inputs.getJSONObject(j)
                val range = spec.optJSONArray("value_range")
                if (spec.getString("name") == input && range != null && range.length() == 2) {
                    return range.getDouble(0) to range.getDouble(1)
                }
            }
        }
        return null
    }
}

fun shapeOf(input: TensorSpec): LongArray = input.shape.map { it.toLong() }.toLongArray()
