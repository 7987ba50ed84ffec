package dev.edgekit.demo.runtime

import java.io.File

/** Values of one model input, in the dtype the manifest names for it. */
sealed class InputValues {
    class Floats(val data: FloatArray) : InputValues()

    /** int32 ids (the SD text encoder's `input_ids`); widened where a runtime wants int64. */
    class Ints(val data: IntArray) : InputValues()
}

/** One input as the manifest describes it: name, static shape, values. */
class ModelInput(val name: String, val shape: LongArray, val values: InputValues)

/** What a bench report's `runtime` block says about the library that ran the model. */
data class RuntimeDescription(
    val name: String,
    val version: String,
    val delegate: String,
    val threads: Int,
)

/**
 * The one contract every runtime meets: load a model file once, then run it on inputs in the
 * manifest's input order and return its outputs in the manifest's output order, as float32.
 * The app never asks which runtime it holds; [Runtimes.open] picks it from the format.
 */
interface InferenceRuntime : AutoCloseable {
    val description: RuntimeDescription

    fun run(inputs: List<ModelInput>): List<FloatArray>
}

/** A format this app has no runtime for, or a model its runtime could not load or run. */
class ModelRuntimeError(message: String, cause: Throwable? = null) : Exception(message, cause)

object Runtimes {
    /** Manifest `format` -> the runtime that runs it on Android. */
    val SUPPORTED_FORMATS = mapOf(
        "tflite" to "LiteRT",
        "executorch" to "ExecuTorch",
        "onnx" to "ONNX Runtime",
    )

    /** Why this app cannot run [format], or null when it can. */
    fun unsupportedReason(format: String): String? {
        if (format in SUPPORTED_FORMATS) return null
        val supported = SUPPORTED_FORMATS.entries.joinToString(", ") { "${it.key} (${it.value})" }
        val hint = if (format == "coreml") " Core ML artifacts run in ios-demo." else ""
        return "This app runs $supported artifacts, not '$format'.$hint"
    }

    /**
     * Loads [modelFile] with the runtime for [format]. [outputNames] are the manifest's output
     * names, in order (ONNX Runtime looks outputs up by name; the others go by position).
     */
    fun open(format: String, modelFile: File, threads: Int, outputNames: List<String>): InferenceRuntime {
        unsupportedReason(format)?.let { throw ModelRuntimeError(it) }
        val runtimeName = SUPPORTED_FORMATS.getValue(format)
        try {
            return when (format) {
                "tflite" -> LiteRtRuntime(modelFile, threads, outputNames.size)
                "executorch" -> ExecuTorchRuntime(modelFile, threads)
                else -> OnnxRuntimeSession(modelFile, threads, outputNames)
            }
        } catch (error: Exception) {
            throw ModelRuntimeError("$runtimeName could not load ${modelFile.name}: ${error.message}", error)
        } catch (error: UnsatisfiedLinkError) {
            // A native library missing for this ABI (e.g. a 32-bit phone) surfaces as an Error.
            throw ModelRuntimeError("$runtimeName has no native library for this device: ${error.message}", error)
        }
    }
}
